"""Secrets never leave ftbroker: what looks like one, and text with every one masked.

Used wherever text is stored (the ledger) or shown (a provider's error message, the CLI's messages and --debug
tracebacks), and to refuse a job spec that holds a credential (a spec is stored in the ledger). Three kinds of
secret are recognised: the value of any credential-like environment variable (``OPENAI_API_KEY``,
``AWS_SECRET_ACCESS_KEY``, ``HF_TOKEN``, ...), strings shaped like a key, whatever variable they came from, and the
user name and password of a URL (``https://user:pass@host``, RFC 3986 section 3.2.1), which a job spec never keeps
(``without_userinfo``). The shapes of a provider's keys are declared by its backend (``key_shapes``, regular
expressions, collected through ``ftbroker.declared``); those of no backend's are here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from ftbroker import declared

MASK = "***"
_CREDENTIAL_VARIABLE = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", re.IGNORECASE)
_SHORTEST_VALUE = 8  # shorter values of such variables are too likely to be ordinary words to mask
_KEY_SHAPES = (
    r"hf_[A-Za-z0-9]{30,}",  # Hugging Face
    r"(?i:bearer)\s+[A-Za-z0-9_\-.=]{16,}",  # an Authorization header
    r"\blocal-[0-9a-f]{40}\b",  # a W&B server's key (https://docs.wandb.ai/guides/hosting/)
    # a W&B key by its field's name, whatever its shape (Together's job takes it as wandb_key)
    r"(?i:(?<=wandb_key)|(?<=wandb_api_key))[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9_\-]{16,}",
)


def _key_shaped() -> re.Pattern[str]:
    """These shapes and every backend's (``re`` keeps the compiled pattern)."""
    return re.compile("|".join([*_KEY_SHAPES, *(shape for shapes in declared.by_backends("key_shapes")
                                                for shape in shapes)]))


# scheme://userinfo@ : the userinfo runs to the last "@" before the path, so an unescaped "@" in a password is
# taken whole
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/?#]*@")


def without_userinfo(value: str) -> str:
    """``value`` with the user name and password of every URL in it removed (``https://host/v1``)."""
    return _URL_USERINFO.sub(r"\1", value)


def looks_like_key(value: str) -> bool:
    """Whether ``value`` contains something shaped like a provider's credential."""
    return _key_shaped().search(value) is not None


def scrub(text: str, extra: Iterable[str] = ()) -> str:
    """``text`` with every secret masked: credential-like environment variables' values, ``extra``, key shapes,
    a URL's user name and password."""
    secrets = {value for name, value in os.environ.items()
               if _CREDENTIAL_VARIABLE.search(name) and len(value) >= _SHORTEST_VALUE}
    secrets.update(s for s in extra if len(s) >= _SHORTEST_VALUE)
    for secret in sorted(secrets, key=len, reverse=True):  # longest first: one secret may contain another
        text = text.replace(secret, MASK)
    return _URL_USERINFO.sub(rf"\1{MASK}@", _key_shaped().sub(MASK, text))
