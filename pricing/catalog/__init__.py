"""Catalogs: GPUs, cloud instances, managed fine-tuning prices and model architectures, loaded from data files.

``schema`` holds the row types, ``fields`` what each field may hold, ``parse`` reads CSV and TOML files into rows,
``load`` merges the files in force (its docstring says which and in what order), ``sanity`` doubts self-contradicting
prices, ``lookup`` is the ``Catalog`` of rows in force, ``hf_config`` reads a model's Hugging Face config.json.
"""

from ftbroker.pricing.catalog.hf_config import model_from_config
from ftbroker.pricing.catalog.load import base_catalog_dir, load_catalog, user_catalog_dir, user_override_path
from ftbroker.pricing.catalog.lookup import Catalog
from ftbroker.pricing.catalog.sanity import price_sanity
from ftbroker.pricing.catalog.schema import (AutoEpochs, CloudInstance, GpuSpec, Linear, ManagedOffer, ModelArch, Row,
                                            is_stale)

__all__ = ["AutoEpochs", "Catalog", "CloudInstance", "GpuSpec", "Linear", "ManagedOffer", "ModelArch", "Row",
           "base_catalog_dir", "is_stale", "load_catalog", "model_from_config", "price_sanity", "user_catalog_dir",
           "user_override_path"]
