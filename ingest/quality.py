"""The warehouse's quality gate: a great-expectations suite run on every micro-batch of calls.

The event contract (pydantic) already refused what cannot be a usage event at all: undecodable
bytes, missing fields, wrong types, negative tokens. This suite checks what a well-formed event
can still get wrong before it becomes money in the warehouse: an event time outside the range
the warehouse accepts, a tenant nobody configured, a negative or missing cost on a priced call.
Each rule is one expectation, run vectorised on the whole batch; a row that breaks any of them
is quarantined with the name of the expectation it failed and the offending value, and every
other row of the batch loads.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
logging.getLogger("great_expectations").setLevel(logging.WARNING)  # it logs INFO on import

import great_expectations as gx  # noqa: E402
from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: E402

for _name in list(logging.root.manager.loggerDict):
    if _name.startswith("great_expectations"):  # some set their own level (INFO) on import
        logging.getLogger(_name).setLevel(logging.WARNING)

EARLIEST_EVENT_TIME = datetime(2020, 1, 1, tzinfo=UTC)
"""Older than any LLM API usage worth importing: an earlier event time is a unit or clock bug."""
MAX_CLOCK_SKEW = timedelta(minutes=10)
"""How far past the loader's clock an event time may be (relay clocks drift a little)."""
MONEY = ("cost_usd", "cost_billed", "fx_rate")
"""The exact amounts the suite checks the sign of."""


@dataclass(frozen=True)
class Failure:
    row: int
    reason: str


@dataclass(frozen=True)
class _Rule:
    expectation: Any
    describe: str
    column: str


class CallChecks:
    """The suite for call rows (the columns of warehouse table `calls`). Build once, run per
    batch; `known_tenants=None` accepts any tenant (e.g. a warehouse without a tenants file)."""

    def __init__(self, known_tenants: Iterable[str] | None) -> None:
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        asset = context.data_sources.add_pandas("loader").add_dataframe_asset("calls")
        self._batch = asset.add_batch_definition_whole_dataframe("micro-batch")
        self._suite = context.suites.add(gx.ExpectationSuite(name="calls"))
        self._rules: dict[str, _Rule] = {}
        self.known_tenants = None if known_tenants is None else sorted(set(known_tenants))
        if self.known_tenants is not None:
            self._add(
                gx.expectations.ExpectColumnValuesToBeInSet(
                    column="tenant", value_set=self.known_tenants
                ),
                "tenant is not configured in tenants.yaml",
            )
        for column in ("latency_ms", "cost_usd", "cost_billed", "fx_rate"):
            self._add(
                gx.expectations.ExpectColumnValuesToBeBetween(column=column, min_value=0),
                f"{column} is negative",
            )
        self._add(
            gx.expectations.ExpectColumnValuesToBeBetween(
                column="event_time", min_value=pd.Timestamp(EARLIEST_EVENT_TIME)
            ),
            f"event time before {EARLIEST_EVENT_TIME.date().isoformat()}",
        )
        self._add(
            gx.expectations.ExpectColumnValuesToBeBetween(
                column="seconds_ahead_of_loader", max_value=MAX_CLOCK_SKEW.total_seconds()
            ),
            f"event time more than {MAX_CLOCK_SKEW.total_seconds() / 60:g} min in the future",
        )
        self._add(
            gx.expectations.ExpectColumnValuesToNotBeNull(
                column="cost_usd", row_condition='price_status=="priced"', condition_parser="pandas"
            ),
            "a priced call has no cost_usd",
        )

    def _add(self, expectation: Any, describe: str) -> None:
        expectation = self._suite.add_expectation(expectation)
        self._rules[expectation.id] = _Rule(expectation, describe, expectation.column)

    def failures(self, frame: pd.DataFrame, now: datetime | None = None) -> list[Failure]:
        """Rows of `frame` (by position) that fail the suite, one reason per row (the first).
        The money columns (`MONEY`) hold exact decimals as Arrow holds them
        (`pd.ArrowDtype(pa.decimal128(...))`, NULL for none)."""
        if frame.empty:
            return []
        now = now or datetime.now(UTC)
        checked = frame.reset_index(drop=True)
        for column in MONEY:
            # The rules test an amount's sign (-1.0 or 1.0; NaN for none), never a float
            # amount. float64 keeps great-expectations on its vectorised path.
            negative = (checked[column] < 0).to_numpy(dtype="float64", na_value=np.nan)
            checked[column] = 1.0 - 2.0 * negative
        checked["latency_ms"] = pd.to_numeric(checked["latency_ms"]).astype("float64")
        checked["event_time"] = pd.to_datetime(checked["event_time"], utc=True)
        checked["seconds_ahead_of_loader"] = (
            checked["event_time"] - pd.Timestamp(now)
        ).dt.total_seconds()
        found: dict[int, str] = {}
        result = self._batch.get_batch(batch_parameters={"dataframe": checked}).validate(
            self._suite, result_format={"result_format": "COMPLETE"}
        )
        for outcome in result.results:
            if outcome.success:
                continue
            config = outcome.expectation_config
            assert config is not None and config.id is not None
            raised = (outcome.exception_info or {}).get("raised_exception")
            if raised:
                # A rule that could not run must stop the batch, not wave it through.
                raise RuntimeError(f"expectation {config.type} could not run: {outcome}")
            rule = self._rules[config.id]
            rows = outcome.result.get("unexpected_index_list") or []
            shown = "event_time" if rule.column == "seconds_ahead_of_loader" else rule.column
            values = frame[shown].to_numpy()
            for row in rows:
                position = int(row if not isinstance(row, dict) else row["index"])
                found.setdefault(
                    position,
                    f"expectation {config.type} failed on {shown}: "
                    f"{rule.describe} (value {_shown(values[position])})",
                )
        return [Failure(row, reason) for row, reason in sorted(found.items())]


def _shown(value: Any) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "null"
    if isinstance(value, datetime | pd.Timestamp):
        return value.isoformat()
    if isinstance(value, Decimal):
        return repr(format(value, "f"))
    return repr(value)
