"""The one clock: FTBROKER_NOW fixes or shifts every date the product uses."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from ftbroker import clock
from ftbroker.errors import InputError


def test_unset_is_the_machine_clock(monkeypatch):
    monkeypatch.delenv(clock.ENV, raising=False)
    before = datetime.now(UTC)
    assert before <= clock.now() <= datetime.now(UTC)


@pytest.mark.parametrize("setting, expected", [
    ("2026-11-28", datetime(2026, 11, 28, tzinfo=UTC)),
    ("2027-02-01T09:30:00", datetime(2027, 2, 1, 9, 30, tzinfo=UTC)),
    ("2027-02-01T09:30:00+02:00", datetime(2027, 2, 1, 7, 30, tzinfo=UTC)),
])
def test_a_fixed_moment(monkeypatch, setting, expected):
    monkeypatch.setenv(clock.ENV, setting)
    assert clock.now() == expected and clock.now().tzinfo is UTC


def test_an_offset_in_days_moves_the_machine_clock(monkeypatch):
    monkeypatch.setenv(clock.ENV, "+400d")
    shifted = clock.now() - datetime.now(UTC)
    assert timedelta(days=399, hours=23) < shifted <= timedelta(days=400)
    monkeypatch.setenv(clock.ENV, "-3d")
    assert clock.today() <= date.today() - timedelta(days=2)


@pytest.mark.parametrize("bad", ["tomorrow", "+4w", "2026-13-01"])
def test_a_bad_setting_is_an_input_error(monkeypatch, bad):
    monkeypatch.setenv(clock.ENV, bad)
    with pytest.raises(InputError, match="FTBROKER_NOW"):
        clock.now()


def test_the_plan_and_the_ledger_read_it(monkeypatch, tmp_path):
    from ftbroker.ledger import Ledger
    from ftbroker.spec import JobSpec

    monkeypatch.setenv(clock.ENV, "2030-01-02T03:04:05")
    with Ledger(tmp_path / "l.sqlite3") as ledger:
        job = ledger.create(JobSpec(dataset="d.jsonl", model="m"))
    assert job.created_at == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
