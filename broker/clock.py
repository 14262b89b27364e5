"""Now, for all of ftbroker: every date and time the product uses (routes closing, stale prices, ledger and event
times, a chat template's "today") comes from here, so one setting moves all of them together.

``FTBROKER_NOW`` sets the clock: an ISO date or date-time is a fixed moment (the README's sample plan, a test
that checks a date), an offset ``+400d`` / ``-3d`` moves the machine's clock by whole days (CI runs the suite a
second time 400 days ahead, so no test can depend on the calendar). Unset: the machine's clock.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, date, datetime, timedelta

from ftbroker.errors import InputError

ENV = "FTBROKER_NOW"
_OFFSET = re.compile(r"([+-]\d{1,6})d")


def now() -> datetime:
    """The current moment, timezone-aware (UTC)."""
    setting = os.environ.get(ENV, "").strip()
    if not setting:
        return datetime.now(UTC)
    offset = _OFFSET.fullmatch(setting)
    if offset:
        return datetime.now(UTC) + timedelta(days=int(offset.group(1)))
    try:
        fixed = datetime.fromisoformat(setting)
    except ValueError:
        raise InputError(f"{ENV}={setting!r}: expected an ISO date or date-time (2026-11-28, "
                         "2026-11-28T09:30:00+00:00) or a whole-day offset (+400d, -3d)") from None
    return fixed.replace(tzinfo=UTC) if fixed.tzinfo is None else fixed.astimezone(UTC)


def today() -> date:
    """Today's date where the user is (the local calendar day of ``now()``)."""
    return now().astimezone().date()
