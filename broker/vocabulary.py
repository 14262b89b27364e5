"""The names every layer shares, defined once: the training methods and the dataset formats.

A backend still says which of them it runs (``Capabilities.methods``, ``Capabilities.data_formats``), and a catalog
offer which formats it takes; those are its facts, not copies of these lists.
"""

from __future__ import annotations

from typing import Literal, get_args

Method = Literal["full", "lora", "qlora"]  # full fine-tuning, a LoRA adapter, LoRA on a 4-bit (NF4) base
METHODS: tuple[Method, ...] = get_args(Method)

DataFormat = Literal["chat", "prompt_completion", "preference", "text"]
FORMATS: tuple[DataFormat, ...] = get_args(DataFormat)
