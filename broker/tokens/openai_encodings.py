"""OpenAI's encodings (o200k_base, cl100k_base): exact counts by tiktoken, or by quicktok (the ``fast`` extra).

The chat overhead is the rule of OpenAI's cookbook ("How to count tokens with tiktoken",
openai/openai-cookbook examples/How_to_count_tokens_with_tiktoken.ipynb, sections 6 and 7): 3 tokens per message,
the role and every text value encoded, 1 more per ``name``, 3 for the reply priming; tool definitions by the same
notebook's ``num_tokens_for_tools`` constants (per function 7 on o200k / 10 on cl100k, 3 to open the properties, 3
per property plus ``name:type:description``, enums -3 +3 per item plus the item, 12 at the end). Nested parameter
schemas (which the notebook ignores) add their JSON text. Assistant ``tool_calls`` count the function name and
arguments plus 3 per call: OpenAI publishes no rule for them, so that part is approximate. Trained = the assistant
content and tool calls plus 1 end-of-message token. Encodings per model: o200k_base for gpt-4o, gpt-4.1, gpt-4.5,
gpt-5, o1/o3/o4 and gpt-oss; cl100k_base for gpt-4, gpt-3.5-turbo, babbage-002 and davinci-002 (tiktoken's own
model table). cl100k_base always works offline (ftbroker ships its file, checked against tiktoken's hash);
o200k_base when the optional ``fast`` extra (quicktok, which ships it and counts the same tokens about 5x faster)
is installed or tiktoken's cache already holds it. Nothing is ever downloaded.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from ftbroker.errors import InputError
from ftbroker.tokens.counters import TemplateCounter, TextCounter, TextValues, TokenCounter
from ftbroker.tokens.pool import encoder_pool
from ftbroker.tokens.walk import ChatRule

OPENAI_O200K = ChatRule(3, 1, 3, 1, 0, 0, True, 7)
OPENAI_CL100K = ChatRule(3, 1, 3, 1, 0, 0, True, 10)

_SEP = "<|endoftext|>"
# text per encode call: long enough that per-call costs vanish, short enough to share out among threads
_CHUNK_CHARS = 256 << 10


class TiktokenTexts:
    """Exact counts of many texts with few calls: the texts are joined with ``<|endoftext|>``, encoded with
    that special token allowed, and split back at it. tiktoken encodes the text between special tokens
    independently, so each count equals ``len(encode_ordinary(text))``; a text that itself contains the
    separator is counted on its own. Chunks of joined text are encoded in parallel threads."""

    def __init__(self, encoding: Any):
        self.key = f"tiktoken:{encoding.name}"
        self._encoding = encoding
        self._core = encoding._core_bpe  # its buffer form avoids one Python int per token
        # token ids < 2**24, so this 4-byte pattern can only match at a token boundary
        self._sep_bytes = encoding.eot_token.to_bytes(4, "little")

    def values(self, batch: TextValues) -> list[float]:
        return self(batch.texts)

    def __call__(self, texts: list[str]) -> list[float]:
        chunks: list[list[str]] = [[]]
        size = 0
        for text in texts:
            if _SEP in text:
                chunks += [[text], []]  # alone in its chunk: encoded as ordinary text
                size = 0
                continue
            chunks[-1].append(text)
            size += len(text)
            if size >= _CHUNK_CHARS:
                chunks.append([])
                size = 0
        chunks = [c for c in chunks if c]
        pool = encoder_pool() if len(chunks) > 1 else None
        counted = pool.map(self._chunk, chunks) if pool is not None else map(self._chunk, chunks)
        return [n for part in counted for n in part]

    def _chunk(self, texts: list[str]) -> list[int]:
        if len(texts) == 1:
            return [len(self._encoding.encode_ordinary(texts[0]))]
        raw = bytes(self._core.encode_to_tiktoken_buffer(_SEP.join(texts), {_SEP}))
        return [len(part) >> 2 for part in raw.split(self._sep_bytes)]


TIKTOKEN_URLS = {  # where tiktoken fetches each encoding; its cache file is named by the URL's sha1
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
}
# tiktoken_ext/openai_public.py: a cached file that fails its hash is re-downloaded by tiktoken
_TIKTOKEN_SHA256 = {
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
}
# cl100k_base ships with ftbroker (cl100k_base.tiktoken beside this module: OpenAI's file from the URL above, checked
# against the hash tiktoken pins), so exact cl100k counts and every estimate built on them work offline from the
# first run. Its pattern and special tokens are tiktoken's own (tiktoken_ext/openai_public.py, cl100k_base).
SHIPPED = {"cl100k_base": Path(__file__).with_name("cl100k_base.tiktoken")}
_CL100K_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|"""
                   r"""\s*[\r\n]|\s+(?!\S)|\s""")
_CL100K_SPECIAL = {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                   "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276}


def _tiktoken_cache_file(encoding: str) -> Path:
    """The file tiktoken's ``read_file_cached`` would read (tiktoken/load.py); touches no network."""
    import hashlib
    import tempfile

    cache_dir = (
        os.environ.get("TIKTOKEN_CACHE_DIR")
        or os.environ.get("DATA_GYM_CACHE_DIR")
        or os.path.join(tempfile.gettempdir(), "data-gym-cache")
    )
    return Path(cache_dir) / hashlib.sha1(TIKTOKEN_URLS[encoding].encode()).hexdigest()


def _cached_intact(encoding: str) -> bool:
    import hashlib

    try:
        data = _tiktoken_cache_file(encoding).read_bytes()
    except OSError:
        return False
    return hashlib.sha256(data).hexdigest() == _TIKTOKEN_SHA256[encoding]


def load_encoding(encoding: str) -> Any | None:
    """The tiktoken encoding if it can be had offline, else None (never downloads: tiktoken would fetch a file
    that is missing or fails its hash, so both are checked first): tiktoken's cache, else the file ftbroker ships."""
    import tiktoken

    if _cached_intact(encoding):
        try:
            return tiktoken.get_encoding(encoding)
        except (ValueError, OSError):  # a corrupt cache file
            pass
    return shipped_encoding(encoding) if encoding in SHIPPED else None


@functools.cache
def shipped_encoding(encoding: str) -> Any:
    """The encoding from the file ftbroker ships (the format of tiktoken's load_tiktoken_bpe: one "base64-token
    rank" per line), read without tiktoken's file cache."""
    import base64
    import hashlib

    import tiktoken

    data = SHIPPED[encoding].read_bytes()
    if hashlib.sha256(data).hexdigest() != _TIKTOKEN_SHA256[encoding]:
        raise InputError(f"{SHIPPED[encoding]} is damaged (its sha256 is not tiktoken's): reinstall ftbroker")
    ranks = {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in data.splitlines() if line)}
    return tiktoken.Encoding(name=encoding, pat_str=_CL100K_PATTERN, mergeable_ranks=ranks,
                             special_tokens=_CL100K_SPECIAL)


class QuicktokTexts:
    """Exact counts by quicktok (the optional ``fast`` extra, package quicktok-v1): the same token ids as tiktoken
    (its own exactness tests; ours in tests/test_tokens.py), about 5x faster, and it ships o200k_base."""

    def __init__(self, tokenizer: Any):
        self.key = f"quicktok:{tokenizer.name}"
        self._count = tokenizer.count

    def values(self, batch: TextValues) -> list[float]:
        return self(batch.texts)

    def __call__(self, texts: list[str]) -> list[float]:
        count, out = self._count, []
        for text in texts:
            try:
                out.append(count(text))
            except TypeError:  # a lone surrogate, which only a hand-made example can hold
                out.append(count(text.encode("utf-8", "replace").decode()))
        return out


def quicktok_encoding(encoding: str) -> Any | None:
    try:
        import quicktok
    except ImportError:
        return None
    try:
        return quicktok.get_encoding(encoding)
    except (RuntimeError, ValueError, KeyError):
        return None


def exact_texts(encoding: str) -> TextCounter | None:
    """The fastest exact counter of an OpenAI encoding to be had offline, or None."""
    fast = quicktok_encoding(encoding)
    if fast is not None:
        return QuicktokTexts(fast)
    enc = load_encoding(encoding)
    return TiktokenTexts(enc) if enc is not None else None


def exact_counter(encoding: str) -> TokenCounter | None:
    """The exact counter of an OpenAI encoding with its chat rule, if the encoding can be had offline."""
    texts = exact_texts(encoding)
    if texts is None:
        return None
    rule = OPENAI_O200K if encoding == "o200k_base" else OPENAI_CL100K
    return TemplateCounter(f"tiktoken:{encoding}", encoding, rule, texts, exact=True,
                           family=encoding.removesuffix("_base"), accuracy="exact")


def encoding_for_openai_model(model: str) -> str | None:
    import tiktoken.model

    try:
        encoding = tiktoken.model.encoding_name_for_model(model.removeprefix("openai/"))
    except KeyError:
        return None
    return "o200k_base" if encoding == "o200k_harmony" else encoding  # same ranks; harmony adds specials
