"""A model's architecture read from its Hugging Face ``config.json``, for a model given as a local folder or file."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

from ftbroker.errors import InputError
from ftbroker.pricing.catalog.fields import RowError, check_model
from ftbroker.pricing.catalog.schema import ModelArch
from ftbroker.tokens.estimate import family_of_config


def _first(cfg: Mapping[str, Any], *keys: str) -> Any:
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k]
    return None


_TIED_BY_DEFAULT = ("gemma",)  # model_type prefixes whose HF config class ties embeddings when the key is absent
_QK_NORM_TYPES = ("qwen3", "gemma3", "olmo2")
_FOUR_NORM_TYPES = ("gemma2", "gemma3")


def model_from_config(path: Path) -> ModelArch:
    """A ModelArch from a Hugging Face config.json (or the folder holding one); nested ``text_config`` read too."""
    config_path = path / "config.json" if path.is_dir() else path
    try:
        cfg = json.loads(config_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{config_path}: cannot read: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{config_path}: not a valid config.json: {exc}") from exc
    if not isinstance(cfg, dict):
        raise InputError(f"{config_path}: not a valid config.json: expected a JSON object")
    for nested in ("text_config", "llm_config", "language_config"):
        if isinstance(cfg.get(nested), dict):
            cfg = {**cfg, **cfg[nested], "model_type": cfg[nested].get("model_type") or cfg.get("model_type")}
    model_type = str(cfg.get("model_type") or "")

    def need(what: str, *keys: str) -> int:
        value = _first(cfg, *keys)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise InputError(f"{config_path}: no {what} (looked for {', '.join(keys)})")
        return value

    hidden = need("hidden size", "hidden_size", "n_embd", "d_model", "dim")
    heads = need("attention head count", "num_attention_heads", "n_head", "num_heads", "n_heads")
    layers = need("layer count", "num_hidden_layers", "n_layer", "num_layers", "n_layers")
    experts = _first(cfg, "num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts") or 0
    intermediate = _first(cfg, "intermediate_size", "ffn_dim", "n_inner", "ffn_hidden_size") or (
        4 * hidden if model_type == "gpt2" else None)
    moe_intermediate = _first(cfg, "moe_intermediate_size", "expert_intermediate_size")
    if experts and moe_intermediate is None:
        moe_intermediate = intermediate  # Mixtral-style: each expert is a full-width MLP
    if intermediate is None:
        intermediate = moe_intermediate or need("MLP width", "intermediate_size", "ffn_dim", "n_inner")
    tie = cfg.get("tie_word_embeddings")
    if tie is None:
        tie = model_type.startswith(_TIED_BY_DEFAULT)
    vocab = need("vocabulary size", "vocab_size", "padded_vocab_size")
    arch = ModelArch(
        name=path.name if path.is_dir() else path.parent.name or str(cfg.get("_name_or_path") or "local model"),
        hidden_size=hidden, intermediate_size=int(intermediate), num_layers=layers, num_heads=heads,
        num_kv_heads=_first(cfg, "num_key_value_heads", "num_kv_heads", "n_kv_heads", "multi_query_group_num") or heads,
        head_dim=_first(cfg, "head_dim") or hidden // heads, vocab_size=vocab,
        max_position_embeddings=need("context length", "max_position_embeddings", "n_positions",
                                     "max_sequence_length", "seq_length"),
        tie_word_embeddings=bool(tie), num_experts=int(experts),
        experts_per_token=(int(_first(cfg, "num_experts_per_tok", "experts_per_token", "moe_topk") or 0)
                           if experts else 0),
        moe_intermediate_size=moe_intermediate if experts else None,
        qkv_bias=bool(_first(cfg, "attention_bias", "qkv_bias")) or model_type.startswith("qwen2"),
        qk_norm=model_type.startswith(_QK_NORM_TYPES),
        norms_per_layer=4 if model_type.startswith(_FOUR_NORM_TYPES) else 2,
        tokenizer_family=family_of_config(cfg) or "", source=str(config_path),
        as_of=date.fromtimestamp(config_path.stat().st_mtime),
        local_tokenizer=str(config_path.parent.resolve()) if (config_path.parent / "tokenizer.json").is_file()
        else None,
    )
    try:
        check_model(arch)
    except RowError as exc:
        raise InputError(f"{config_path}: {exc.field}: {exc.message}") from None
    return arch
