"""Catalogs: GPUs, cloud instances, managed fine-tuning prices and model architectures, as data files."""
