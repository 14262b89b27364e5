"""``resolve``: the best token counter to be had offline for a tokenizer, a model's repo or a family."""

from __future__ import annotations

import os
from pathlib import Path

from ftbroker.errors import InputError, UnknownNameError
from ftbroker.tokens.counters import TokenCounter
from ftbroker.tokens.estimate import estimate_counter, family_of, family_of_config
from ftbroker.tokens.hf import HFCounter, hf_cached_folder, read_json
from ftbroker.tokens.openai_encodings import TIKTOKEN_URLS, encoding_for_openai_model, exact_counter


def resolve(
    tokenizer: str | None = None, *, hf_repo: str | None = None, family: str | None = None
) -> TokenCounter:
    """The best counter to be had offline.

    ``tokenizer`` is an explicit choice (the ``--tokenizer`` flag): an encoding (``o200k_base``,
    ``cl100k_base``), an OpenAI model name, a local tokenizer or model folder, or a ``tokenizer.json``. Else
    ``hf_repo`` if its tokenizer is already in the local Hugging Face cache. Else a labelled estimate for
    ``family`` (or for the family guessed from ``hf_repo``). When an exact encoding cannot be had offline, the
    estimate's name says so.
    """
    if tokenizer:
        path = Path(tokenizer).expanduser()
        if path.is_file() and path.name == "tokenizer.json":
            path = path.parent
        if path.is_dir():
            if (path / "tokenizer.json").is_file():
                return HFCounter(path.resolve(), path.resolve().name)
            if not (path / "config.json").is_file():
                raise InputError(
                    f"{path} has no tokenizer.json (a Hugging Face tokenizer or model folder has one)"
                )
            of_config = family_of_config(read_json(path / "config.json"))
            return estimate_counter(of_config, why=f"no tokenizer.json in {path}")
        if tokenizer in TIKTOKEN_URLS:
            return _openai_counter(tokenizer)
        encoding = encoding_for_openai_model(tokenizer)
        if encoding in TIKTOKEN_URLS:
            return _openai_counter(encoding)
        if os.sep in tokenizer or tokenizer.startswith("."):
            raise InputError(f"no tokenizer folder at {tokenizer}")
        raise UnknownNameError(
            "tokenizer",
            tokenizer,
            TIKTOKEN_URLS,
            hint=f"valid: {', '.join(TIKTOKEN_URLS)}, an OpenAI model name, or a local tokenizer folder",
        )
    if hf_repo:
        folder = hf_cached_folder(hf_repo)
        if folder is not None:
            return HFCounter(folder, hf_repo.split("/")[-1])
        family = family or family_of(hf_repo)
    if family in ("o200k", "cl100k"):
        return _openai_counter(f"{family}_base")
    return estimate_counter(family)


def _openai_counter(encoding: str) -> TokenCounter:
    """The exact counter of an OpenAI encoding, else the estimate of its family, saying why."""
    return exact_counter(encoding) or estimate_counter(
        encoding.removesuffix("_base"),
        why=f"{encoding} is not in tiktoken's cache, the 'fast' extra is not installed, and ftbroker never "
            "downloads it")
