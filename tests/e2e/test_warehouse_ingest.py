"""The warehouse as an operator uses it: live calls through the relay, a historical import with
bad rows, the conservation report, a rebuild from the log with identical totals, Parquet
snapshots and the one-writer rule; all on the real broker and real DuckDB files."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import openai
import pytest

from ingest.topics import USAGE_EVENTS, USAGE_IMPORTS
from tests.e2e.conftest import Pipeline, poll, running_pipeline

pytestmark = pytest.mark.slow

LAST_MONTH = datetime.now(UTC).replace(
    day=1, hour=9, minute=0, second=0, microsecond=0
) - timedelta(days=20)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    with running_pipeline(tmp_path_factory.mktemp("warehouse"), []) as pipeline:
        yield pipeline


def history_row(n: int, **changes: object) -> dict[str, object]:
    row: dict[str, object] = {
        "event_time": (LAST_MONTH + timedelta(minutes=n)).isoformat(),
        "tenant": "acme",
        "feature": "search",
        "prompt_version": "v0",
        "endpoint": "chat.completions",
        "requested_model": "gpt-4o-mini",
        "served_model": "gpt-4o-mini",
        "provider": "openai",
        "provider_model": "gpt-4o-mini",
        "latency_ms": 300 + n,
        "input_uncached_tokens": 1000 + n,
        "output_tokens": 100,
    }
    row.update(changes)
    return row


def test_live_calls_and_imported_history_load_with_bad_rows_quarantined(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    sdk = openai.OpenAI(base_url=f"{pipeline.relay}/v1", api_key="sk-acme-demo")
    for i in range(6):
        sdk.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"question {i}"}]
        )
    rows = [history_row(n) for n in range(8)]
    # The header is line 1, so the good rows are lines 2-9 and the bad ones 10-13.
    rows.append(history_row(20, tenant="umbrella"))
    rows.append(history_row(21, output_tokens=-3))
    rows.append(history_row(22, event_time="2015-03-01T00:00:00+00:00"))
    rows.append(history_row(23, latency_ms="fast"))
    history = tmp_path / "history.csv"
    with history.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    imported = pipeline.tokenops("ingest", "import", str(history))
    assert imported.returncode == 1, imported.stderr
    assert f"published 12 rows of {history}" in imported.stdout
    assert "loaded or already present: 8; quarantined: 4" in imported.stdout
    assert "line 10: expectation expect_column_values_to_be_in_set failed on tenant" in (
        imported.stdout
    )
    assert "line 11: tokens.output: Input should be greater than or equal to 0" in imported.stdout
    assert "line 12: expectation expect_column_values_to_be_between failed on event_time" in (
        imported.stdout
    )
    assert "line 13: latency_ms: Input should be a valid integer" in imported.stdout

    # Importing the file again loads no call twice (ids derived from the rows); its bad rows
    # are quarantined again, as a second attempt.
    again = pipeline.tokenops("ingest", "import", str(history))
    assert "loaded or already present: 8; quarantined: 4" in again.stdout

    costs = poll(
        f"{pipeline.api}/api/costs?group_by=prompt_version",
        lambda b: sum(r["requests"] for r in b["rows"]) >= 14,
    )
    assert {r["prompt_version"]: r["requests"] for r in costs["rows"]} == {None: 6, "v0": 8}

    report = pipeline.http.get(f"{pipeline.api}/api/ingest/conservation").json()
    assert report["balanced"]
    by_topic: dict[str, dict[str, int]] = {}
    for row in report["rows"]:
        totals = by_topic.setdefault(row["topic"], {"consumed": 0, "loaded": 0, "q": 0, "d": 0})
        totals["consumed"] += row["consumed"]
        totals["loaded"] += row["loaded"]
        totals["q"] += row["quarantined"]
        totals["d"] += row["duplicates"]
    assert by_topic[USAGE_EVENTS] == {"consumed": 6, "loaded": 6, "q": 0, "d": 0}
    assert by_topic[USAGE_IMPORTS] == {"consumed": 24, "loaded": 8, "q": 8, "d": 8}

    quarantine = pipeline.http.get(f"{pipeline.api}/api/quarantine?topic={USAGE_IMPORTS}").json()
    assert {c["stage"]: c["records"] for c in quarantine["counts"]} == {
        "expectations": 4,
        "decode": 4,
    }


def test_replay_rebuilds_identical_totals(pipeline: Pipeline, tmp_path: Path) -> None:
    rebuilt = tmp_path / "rebuilt.duckdb"
    result = pipeline.tokenops("ingest", "replay", "--into", str(rebuilt))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "identical totals to the running warehouse" in result.stdout
    live = pipeline.http.get(f"{pipeline.api}/api/ingest/totals").json()
    assert live["calls"] == 14 and Decimal(live["cost_usd"]) > 0
    with duckdb.connect(str(rebuilt), read_only=True) as con:
        calls, cost = con.execute(
            "SELECT count(*), sum(effective_cost_usd) FROM call_costs"
        ).fetchone()
    assert (calls, cost) == (14, Decimal(live["cost_usd"]))


def test_snapshots_and_a_second_writer(pipeline: Pipeline) -> None:
    taken = pipeline.http.post(f"{pipeline.api}/api/snapshots", timeout=60).json()
    folder = Path(taken["path"])
    assert "calls.parquet" in taken["files"]
    with duckdb.connect() as con:
        count = con.execute(f"SELECT count(*) FROM '{folder / 'calls.parquet'}'").fetchone()
    assert count == (14,)

    refused = pipeline.tokenops("ingest", "replay", "--replace")
    assert refused.returncode == 2
    line = refused.stderr.strip()
    assert "is open for writing by pid" in line and "tokenops warehouse service, API on" in line
    assert "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
