"""`tokenops ingest`: import historical usage, and rebuild the warehouse from the log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ingest.history_import import ImportFormat, read_rows
from ingest.topics import USAGE_IMPORTS
from tokenops.errors import TokenopsError
from tokenops.settings import Settings, get_settings
from tokenops.warehouse_client import WarehouseUnavailable, warehouse_get

ingest_app = typer.Typer(
    no_args_is_help=True, help="Import historical usage; rebuild the warehouse from the topics."
)

COMPARED = ("calls", "cost_usd", "unpriced_calls", "alerts", "alert_deliveries", "quarantined")
"""Totals a rebuild reproduces exactly (corrections may fold into call costs, see replay)."""


def _imports_consumed(settings: Settings) -> int:
    report = warehouse_get(settings, "/api/ingest/conservation", {"topic": USAGE_IMPORTS}).json()
    return int(report["totals"]["consumed"])


def _publish(settings: Settings, path: Path, fmt: ImportFormat | None) -> dict[int, int]:
    """Every row of the file onto the imports topic; returns offset -> line."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from tokenops.broker import ensure_topics, require_broker

    require_broker(settings.bootstrap)
    ensure_topics(settings.bootstrap)
    producer = KafkaProducer(
        bootstrap_servers=settings.bootstrap, acks="all", linger_ms=20, max_block_ms=10_000
    )
    try:
        sent = [
            (row.line, producer.send(USAGE_IMPORTS, key=row.key or None, value=row.payload))
            for row in read_rows(path, fmt)
        ]
        producer.flush(timeout=60)
        lines: dict[int, int] = {}
        for line, future in sent:
            try:
                lines[future.get(timeout=10).offset] = line
            except KafkaError as exc:
                raise TokenopsError(
                    f"line {line} of {path} was not accepted by Kafka ({exc}); "
                    f"{len(lines)} rows before it were published, importing again is safe"
                ) from None
        return lines
    finally:
        producer.close(timeout=5)


@ingest_app.command("import")
def import_file(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    fmt: Annotated[
        str | None, typer.Option("--format", help="jsonl or csv (default: from the file name)")
    ] = None,
    wait: Annotated[
        bool, typer.Option(help="wait for the warehouse to load the rows and report each one")
    ] = True,
    timeout_s: Annotated[float, typer.Option(help="how long to wait for the warehouse")] = 300.0,
) -> None:
    """Load historical usage (JSONL or CSV) through the warehouse's checks; bad rows are
    quarantined with their reason and listed here."""
    if fmt not in (None, "jsonl", "csv"):
        raise TokenopsError(f"--format must be jsonl or csv, not {fmt!r}")
    settings = get_settings()
    try:
        from ingest.history_import import detect_format

        chosen: ImportFormat = fmt or detect_format(file)  # type: ignore[assignment]
    except ValueError as exc:
        raise TokenopsError(str(exc)) from None
    before = _imports_consumed(settings) if wait else 0
    lines = _publish(settings, file, chosen)
    typer.echo(f"published {len(lines)} rows of {file} to {USAGE_IMPORTS}")
    if not wait or not lines:
        return
    deadline = time.monotonic() + timeout_s
    while _imports_consumed(settings) < before + len(lines):
        if time.monotonic() > deadline:
            raise TokenopsError(
                f"the warehouse has not loaded all {len(lines)} rows within {timeout_s:g} s; "
                "they stay on the topic and load when it catches up"
            )
        time.sleep(0.5)
    found = warehouse_get(
        settings, "/api/quarantine", {"topic": USAGE_IMPORTS, "limit": 10_000}
    ).json()
    rejected = sorted(
        (lines[r["offset"]], r["reason"]) for r in found["rows"] if r["offset"] in lines
    )
    typer.echo(
        f"loaded or already present: {len(lines) - len(rejected)}; quarantined: {len(rejected)}"
    )
    for line, reason in rejected:
        typer.echo(f"  line {line}: {reason}")
    if rejected:
        raise typer.Exit(1)


def _rebuild(settings: Settings, target: Path) -> dict[str, Any]:
    from ingest.loader import WarehouseLoader
    from ingest.quality import CallChecks
    from ingest.replay import replay
    from relay.tenants import TenantDirectory
    from tokenops.broker import require_broker
    from tokenops.collector import tune_collector
    from tokenops.settings import load_pricer
    from warehouse import queries
    from warehouse.store import WarehouseStore

    require_broker(settings.bootstrap)
    tune_collector()  # the replay loads the log in micro-batches of up to 250,000 records
    tenants = TenantDirectory.load(settings.config_dir / "tenants.yaml").names
    staging = target.with_name(f".{target.name}.replay-{os.getpid()}")
    staging.unlink(missing_ok=True)
    store = WarehouseStore(staging, role="tokenops ingest replay")
    try:
        store.sync_tenants(tenants)
        loader = WarehouseLoader(
            settings.bootstrap, store, load_pricer(settings), CallChecks(tenants)
        )
        loader.reconcile_price_versions()
        progress = asyncio.run(replay(settings.bootstrap, loader))
        with store.cursor() as cur:
            totals = queries.warehouse_totals(cur)
    finally:
        store.close()
    os.replace(staging, target)
    staging.with_name(staging.name + ".wal").unlink(missing_ok=True)
    typer.echo(f"replayed {sum(progress.records.values())} records into {target}:")
    for topic, count in sorted(progress.records.items()):
        typer.echo(f"  {topic}: {count}")
    for partition, end in progress.unreached.items():
        typer.echo(f"  {partition}: the broker served nothing up to its end offset {end}")
    return totals


@ingest_app.command("replay")
def replay_command(
    into: Annotated[
        Path | None,
        typer.Option(help="the rebuilt DuckDB file (default: warehouse.replay.duckdb in data dir)"),
    ] = None,
    replace: Annotated[
        bool,
        typer.Option(
            help="rebuild the warehouse file itself (the warehouse service must be stopped)"
        ),
    ] = False,
) -> None:
    """Rebuild the warehouse from the topics and compare its totals with the running one."""
    from warehouse.store import WarehouseOutdated, WarehouseStore

    settings = get_settings()
    if replace:
        target = settings.warehouse_path
        # refuses if in use; a file of an earlier tokenops is what the rebuild is for
        with contextlib.suppress(WarehouseOutdated):
            WarehouseStore(target, role="tokenops ingest replay").close()
    else:
        target = into or settings.data_dir / "warehouse.replay.duckdb"
    totals = _rebuild(settings, target)
    typer.echo(json.dumps(totals, indent=2))
    if replace:
        return
    try:
        live = warehouse_get(settings, "/api/ingest/totals").json()
    except WarehouseUnavailable:
        typer.echo("the warehouse service is not running: nothing to compare with")
        return
    differences = [k for k in (*COMPARED, "tenants") if live.get(k) != totals.get(k)]
    if not differences:
        typer.echo("identical totals to the running warehouse")
        return
    for key in differences:
        typer.echo(f"differs from the running warehouse: {key}: {live.get(key)} (live)")
    typer.echo("(the running warehouse may have loaded records published after the replay began)")
    raise typer.Exit(1)
