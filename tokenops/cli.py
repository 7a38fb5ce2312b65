"""The `tokenops` command: one subcommand per component, plus `up` for the whole pipeline."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
from collections.abc import Callable
from functools import wraps
from typing import Annotated, Any, TypeVar

import typer

from tokenops.errors import TokenopsError
from tokenops.settings import get_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)

F = TypeVar("F", bound=Callable[..., Any])


def one_line_errors(func: F) -> F:
    """Print a TokenopsError as one line on stderr and exit 2: no traceback for known failures."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except TokenopsError as exc:
            typer.echo(f"tokenops: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def configure_logging() -> None:
    """JSON lines on stderr; the chattiest client libraries at WARNING."""
    logging.basicConfig(
        level=logging.INFO,
        format='{"time":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s",'
        '"message":"%(message)s"}',
    )
    for noisy in ("kafka", "aiokafka", "faust", "mode", "uvicorn.access", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _serve(
    app_obj: Any, host: str, port: int, workers: int | None = None, proxy_headers: bool = True
) -> None:
    import uvicorn

    from tokenops.broker import port_is_open

    if port_is_open(host, port):
        raise TokenopsError(f"cannot listen on {host}:{port}: the address is already in use")
    uvicorn.run(
        app_obj,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        proxy_headers=proxy_headers,
        # With workers, app_obj is an import string: each worker process builds its own app.
        workers=workers,
        factory=workers is not None,
    )


@app.command()
@one_line_errors
def broker(
    port: Annotated[int | None, typer.Option(help="port on 127.0.0.1")] = None,
) -> None:
    """Run the embedded Kafka-protocol broker (memory storage) and create every topic."""
    from tokenops.broker import ensure_topics, start_embedded_broker

    settings = get_settings()
    port = port or settings.embedded_broker_port
    process = start_embedded_broker(port)
    try:
        created = ensure_topics(f"127.0.0.1:{port}")
        typer.echo(f"broker listening on 127.0.0.1:{port}; topics created: {len(created)}")
        signal.signal(signal.SIGTERM, lambda *_: process.terminate())
        process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(5)


@app.command()
@one_line_errors
def topics() -> None:
    """Create every pipeline topic on the configured Kafka cluster (idempotent)."""
    from tokenops.broker import ensure_topics

    settings = get_settings()
    created = ensure_topics(settings.bootstrap)
    typer.echo(f"{settings.bootstrap}: created {created or 'nothing (all present)'}")


@app.command()
@one_line_errors
def simulator() -> None:
    """Run the simulated OpenAI-compatible provider."""
    from tokenops.simulated_provider import create_app

    settings = get_settings()
    _serve(create_app(), settings.simulator_host, settings.simulator_port)


@app.command()
@one_line_errors
def relay() -> None:
    """Run the relay (OpenAI-compatible gateway that meters every call)."""
    configure_logging()
    from relay.app import create_app
    from relay.metrics import MULTIPROCESS_DIR
    from tokenops.broker import port_is_open
    from tokenops.processes import pid_alive

    settings = get_settings()
    if settings.relay_workers == 1:
        os.environ.pop(MULTIPROCESS_DIR, None)  # one process keeps its metrics in memory
        _serve(create_app(settings), settings.relay_host, settings.relay_port, proxy_headers=False)
        return
    if port_is_open(settings.relay_host, settings.relay_port):
        raise TokenopsError(
            f"cannot listen on {settings.relay_host}:{settings.relay_port}: "
            "the address is already in use"
        )
    # Workers share metrics through files: a directory of this run's own, named before they
    # start; those of runs that are over are deleted.
    runs = settings.data_dir / "relay-metrics"
    for old in runs.glob("*"):
        if old.name.isdigit() and not pid_alive(int(old.name)):
            shutil.rmtree(old, ignore_errors=True)
    shared = runs / str(os.getpid())
    shutil.rmtree(shared, ignore_errors=True)
    shared.mkdir(parents=True)
    os.environ[MULTIPROCESS_DIR] = str(shared)
    _serve(
        "relay.app:create_worker_app",
        settings.relay_host,
        settings.relay_port,
        workers=settings.relay_workers,
        proxy_headers=False,
    )


@app.command()
@one_line_errors
def streams() -> None:
    """Run the faust streams worker: pricing, budget ledgers and budget alerts."""
    configure_logging()
    from streams.worker import run_worker

    run_worker(get_settings())


@app.command()
@one_line_errors
def warehouse() -> None:
    """Run the warehouse service: Kafka -> DuckDB loader, query API and dashboard."""
    configure_logging()
    from tokenops.collector import freeze_startup_objects, tune_collector
    from warehouse.service import create_app

    settings = get_settings()
    tune_collector()  # the loader turns each fetch into up to 250,000 consumer records
    service = create_app(settings)
    freeze_startup_objects()
    _serve(service, settings.warehouse_host, settings.warehouse_port)


@app.command("demo-traffic")
@one_line_errors
def demo_traffic(
    rate: Annotated[float, typer.Option(help="requests per second")] = 4.0,
    count: Annotated[int, typer.Option(help="stop after this many requests (0: never)")] = 0,
    spike_after: Annotated[
        float | None, typer.Option(help="start a context-bloat spike after this many seconds")
    ] = None,
    spike_tenant: Annotated[str, typer.Option(help="the spiking tenant")] = "acme",
    spike_prompt_version: Annotated[
        str, typer.Option(help="the spiking prompt version")
    ] = "search-v2",
    spike_factor: Annotated[int, typer.Option(help="prompt size multiplier", min=2)] = 3,
) -> None:
    """Send continuous sample traffic from the demo tenants through the relay."""
    from tokenops.demo_traffic import Spike, run

    spike = None
    if spike_after is not None:
        spike = Spike(spike_after, spike_tenant, spike_prompt_version, spike_factor)
    run(get_settings(), rate=rate, count=count, spike=spike)


def _add_group(group: typer.Typer, name: str) -> None:
    """A command group whose commands, like the others, fail with one line."""
    for command in group.registered_commands:
        assert command.callback is not None
        command.callback = one_line_errors(command.callback)
    app.add_typer(group, name=name)


def _groups() -> None:
    from tokenops.access_cli import access_app
    from tokenops.alerts_cli import alerts_app
    from tokenops.export_cli import export_app
    from tokenops.ingest_cli import ingest_app
    from tokenops.prices_cli import prices_app
    from tokenops.report_cli import report_app

    _add_group(prices_app, "prices")
    _add_group(alerts_app, "alerts")
    _add_group(export_app, "export")
    _add_group(report_app, "report")
    _add_group(ingest_app, "ingest")
    _add_group(access_app, "access")


_groups()


@app.command()
@one_line_errors
def up(
    demo: Annotated[bool, typer.Option(help="also send continuous demo traffic")] = False,
) -> None:
    """Start the whole pipeline as one supervised process group; Ctrl-C stops it."""
    from tokenops.supervisor import run_pipeline

    sys.exit(run_pipeline(get_settings(), demo=demo))
