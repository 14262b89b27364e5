"""Prices of what an evaluation calls, and its quote: pure (the price table is data, read once).

The table is ``data/prices.toml`` (every row with its public source), and ``$FTBROKER_HOME/eval_prices.toml`` in
the same shape, whose rows replace the shipped ones: a price the shipped table does not have (a Bedrock Provisioned
Throughput hour, an OpenAI-compatible server) can be given there. A cost with no price is *unknown*, never zero:
``--max-cost`` then refuses the evaluation, saying what is unpriced.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from ftbroker.errors import CatalogError

OVERRIDE_NAME = "eval_prices.toml"
MILLION = Decimal(1_000_000)
_DATED = re.compile(r"-\d{4}-\d{2}-\d{2}$")  # OpenAI's snapshot suffix: gpt-4o-mini-2024-07-18


@dataclass(frozen=True)
class ModelPrice:
    provider: str
    model: str
    input: Decimal | None  # USD per 1M tokens; None: no public price
    output: Decimal | None
    judge: bool = False
    source: str = ""

    @property
    def known(self) -> bool:
        return self.input is not None and self.output is not None

    def cost(self, input_tokens: int, output_tokens: int) -> Decimal | None:
        if not self.known:
            return None
        return (self.input * input_tokens + self.output * output_tokens) / MILLION


@dataclass(frozen=True)
class DeploymentPrice:
    provider: str
    hardware: str
    usd_per_hour: Decimal
    source: str = ""


@dataclass(frozen=True)
class PriceTable:
    models: Mapping[tuple[str, str], ModelPrice]
    deployments: Mapping[str, DeploymentPrice]

    def model(self, provider: str, model: str) -> ModelPrice | None:
        """The price of calling ``model``; an OpenAI snapshot or fine-tune id falls back to its family's row
        (``ft:gpt-4o-mini-2024-07-18:org::id`` -> ``ft:gpt-4o-mini``)."""
        for name in _names(provider, model):
            found = self.models.get((provider, name))
            if found is not None:
                return found
        return None

    def judges(self) -> dict[str, str]:
        """Judge model id -> its provider."""
        return {name: provider for (provider, name), price in self.models.items() if price.judge}


def _names(provider: str, model: str) -> list[str]:
    names = [model]
    if provider == "openai":
        if model.startswith("ft:"):
            base = model.split(":")[1]
            names.append("ft:" + _DATED.sub("", base))
        else:
            names.append(_DATED.sub("", model))
    return names


def load_prices(home: Path | None = None) -> PriceTable:
    """The shipped table with ``home/eval_prices.toml`` over it (CatalogError, exit 2, for a bad override row)."""
    shipped = resources.files("ftbroker.evaluation").joinpath("data", "prices.toml").read_text(encoding="utf-8")
    models, deployments = _rows(tomllib.loads(shipped), "prices.toml")
    override = home / OVERRIDE_NAME if home is not None else None
    if override is not None and override.is_file():
        try:
            extra = tomllib.loads(override.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise CatalogError(f"{override}: not readable TOML: {exc}") from exc
        more_models, more_deployments = _rows(extra, str(override))
        models |= more_models
        deployments |= more_deployments
    return PriceTable(models, deployments)


def _money(value: Any, where: str, name: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise CatalogError(f"{where}: {name} must be a number of USD >= 0, not {value!r}")
    return Decimal(str(value))


def _rows(raw: Mapping[str, Any], source: str) -> tuple[dict, dict]:
    models, deployments = {}, {}
    for index, row in enumerate(raw.get("model", []), 1):
        where = f"{source}: model row {index}"
        if not isinstance(row.get("provider"), str) or not isinstance(row.get("model"), str):
            raise CatalogError(f"{where}: needs provider and model")
        price = ModelPrice(row["provider"], row["model"], _money(row.get("input"), where, "input"),
                           _money(row.get("output"), where, "output"), bool(row.get("judge", False)),
                           str(row.get("source", "")))
        models[(price.provider, price.model)] = price
    for index, row in enumerate(raw.get("deployment", []), 1):
        where = f"{source}: deployment row {index}"
        hourly = _money(row.get("usd_per_hour"), where, "usd_per_hour")
        if not isinstance(row.get("provider"), str) or hourly is None:
            raise CatalogError(f"{where}: needs provider and usd_per_hour")
        deployments[row["provider"]] = DeploymentPrice(row["provider"], str(row.get("hardware", "")), hourly,
                                                       str(row.get("source", "")))
    return models, deployments


# --- the quote ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Part:
    """One line of the quote: ``expected`` assumes answers of typical length and no retry; ``high`` every answer
    at its token cap and every judge retry (what the budget is held to). None: unknown, ``why`` says why."""

    label: str
    expected: Decimal | None
    high: Decimal | None
    why: str = ""
    calls: int = 0


@dataclass(frozen=True)
class Quote:
    parts: tuple[Part, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def unknown(self) -> list[str]:
        return [f"{p.label}: {p.why}" for p in self.parts if p.high is None]

    @property
    def expected(self) -> Decimal | None:
        return None if self.unknown else sum((p.expected or Decimal(0) for p in self.parts), Decimal(0))

    @property
    def high(self) -> Decimal | None:
        return None if self.unknown else sum((p.high or Decimal(0) for p in self.parts), Decimal(0))


def token_part(label: str, price: ModelPrice | None, *, calls: int, input_tokens: int, output_expected: int,
               output_high: int, extra_input: int = 0, why_unknown: str = "") -> Part:
    """Calls priced per token: ``input_tokens`` over all calls, answers of ``output_expected`` tokens in all as
    expected, ``output_high`` at most; ``extra_input``: the input of the retries the high end allows for."""
    if calls == 0:
        return Part(label, Decimal(0), Decimal(0))
    if price is None or not price.known:
        return Part(label, None, None, why_unknown or "no price for it in the price table", calls)
    return Part(label, price.cost(input_tokens, output_expected), price.cost(input_tokens + extra_input, output_high),
                calls=calls)


def hours_part(label: str, price: DeploymentPrice | None, hours: float, why_unknown: str) -> Part:
    if price is None:
        return Part(label, None, None, why_unknown)
    cost = price.usd_per_hour * Decimal(str(hours))
    return Part(f"{label} ({price.hardware}, ${price.usd_per_hour}/h x {hours:g} h)", cost, cost)


def spent(price: ModelPrice | None, input_tokens: int, output_tokens: int) -> Decimal | None:
    """What calls that used these tokens cost (None: unpriced, and they used some)."""
    if input_tokens == 0 and output_tokens == 0:
        return Decimal(0)
    return price.cost(input_tokens, output_tokens) if price is not None else None


def total(values: Sequence[Decimal | None]) -> Decimal | None:
    return None if any(v is None for v in values) else sum(values, Decimal(0))
