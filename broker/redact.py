"""Secrets never leave ftbroker: what looks like one, and text with every one masked.

Used wherever text is stored (the ledger) or shown (a provider's error message), and to refuse a job spec that
holds a credential (a spec is stored in the ledger). Two kinds of secret are recognised: the value of any
credential-like environment variable (``OPENAI_API_KEY``, ``AWS_SECRET_ACCESS_KEY``, ``HF_TOKEN``, ...), and
strings shaped like the providers' keys, whatever variable they came from.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

MASK = "***"
_CREDENTIAL_VARIABLE = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", re.IGNORECASE)
_SHORTEST_VALUE = 8  # shorter values of such variables are too likely to be ordinary words to mask
_KEY_SHAPED = re.compile(
    r"sk-[A-Za-z0-9_\-]{16,}"  # OpenAI (sk-, sk-proj-, sk-svcacct-)
    r"|tgp_v1_[A-Za-z0-9_\-]{16,}"  # Together
    r"|hf_[A-Za-z0-9]{30,}"  # Hugging Face
    r"|(?i:bearer)\s+[A-Za-z0-9_\-.=]{16,}"  # an Authorization header
    r"|(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])"  # AWS access key ids (long-lived and temporary)
)


def looks_like_key(value: str) -> bool:
    """Whether ``value`` contains something shaped like a provider's credential."""
    return _KEY_SHAPED.search(value) is not None


def scrub(text: str, extra: Iterable[str] = ()) -> str:
    """``text`` with every secret masked: credential-like environment variables' values, ``extra``, key shapes."""
    secrets = {value for name, value in os.environ.items()
               if _CREDENTIAL_VARIABLE.search(name) and len(value) >= _SHORTEST_VALUE}
    secrets.update(s for s in extra if len(s) >= _SHORTEST_VALUE)
    for secret in sorted(secrets, key=len, reverse=True):  # longest first: one secret may contain another
        text = text.replace(secret, MASK)
    return _KEY_SHAPED.sub(MASK, text)
