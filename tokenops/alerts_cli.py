"""`tokenops alerts`: follow alerts in a terminal, and deliver them to webhooks."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from datetime import UTC
from typing import Annotated, get_args

import typer

from ingest.alert_event import AlertEvent

alerts_app = typer.Typer(no_args_is_help=True, help="Follow alerts and deliver them to webhooks.")

KINDS = get_args(AlertEvent.model_fields["kind"].annotation)
STATE_COLOURS = {"WARN": "yellow", "BREACH": "red", "RECOVERED": "green"}


def alert_line(alert: AlertEvent) -> str:
    """One readable line: time, state, kind, tenant [scope], message."""
    when = alert.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    state = typer.style(f"{alert.state:<9}", fg=STATE_COLOURS.get(alert.state), bold=True)
    extra = {k: v for k, v in alert.scope.items() if not (k == "tenant" and v == alert.tenant)}
    scope = " [" + " ".join(f"{k}={v}" for k, v in extra.items()) + "]" if extra else ""
    return f"{when}Z  {state}  {alert.kind:<8}  {alert.tenant}{scope}  {alert.message}"


@alerts_app.command()
def tail(
    tenant: Annotated[
        list[str] | None, typer.Option(help="only this tenant's alerts (repeatable)")
    ] = None,
    kind: Annotated[
        list[str] | None, typer.Option(help=f"only alerts of this kind: {', '.join(KINDS)}")
    ] = None,
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="start at the oldest alert, not now")
    ] = False,
    json_lines: Annotated[
        bool, typer.Option("--json", help="print each alert's JSON as it is on the topic")
    ] = False,
) -> None:
    """Follow the alerts topic and print one line per alert until Ctrl-C."""
    from kafka import KafkaConsumer, TopicPartition
    from pydantic import ValidationError

    from ingest.topics import ALERTS
    from tokenops.broker import require_broker
    from tokenops.errors import BrokerError
    from tokenops.settings import get_settings

    unknown = set(kind or ()) - set(KINDS)
    if unknown:
        raise typer.BadParameter(f"{', '.join(sorted(unknown))}; use one of {', '.join(KINDS)}")
    settings = get_settings()
    require_broker(settings.bootstrap)
    # Ctrl-C and SIGTERM end it quietly with status 0, even when started with SIGINT ignored
    # (as a background job of a non-interactive shell is).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap, enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(ALERTS)
        if not partitions:
            raise BrokerError(
                f"{settings.bootstrap} has no topic {ALERTS}; create it with 'tokenops topics'"
            )
        tps = [TopicPartition(ALERTS, p) for p in sorted(partitions)]
        consumer.assign(tps)
        if from_beginning:
            consumer.seek_to_beginning(*tps)
        else:
            consumer.seek_to_end(*tps)
        for tp in tps:
            consumer.position(tp)  # resolve "now" before saying we follow
        where = "the beginning" if from_beginning else "now"
        typer.echo(
            f"following {ALERTS} on {settings.bootstrap} from {where}; Ctrl-C stops", err=True
        )
        while True:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    value = record.value or b""
                    try:
                        alert = AlertEvent.model_validate_json(value)
                    except ValidationError as exc:
                        typer.echo(
                            f"skipped an invalid alert at offset {record.offset}: "
                            f"{exc.errors()[0]['msg']}",
                            err=True,
                        )
                        continue
                    if tenant and alert.tenant not in tenant:
                        continue
                    if kind and alert.kind not in kind:
                        continue
                    typer.echo(value.decode() if json_lines else alert_line(alert))
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python's exit flush quiet too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        with contextlib.suppress(Exception):
            consumer.close()


@alerts_app.command()
def deliver() -> None:
    """Deliver alerts to the webhooks in CONFIG_DIR/webhooks.yaml, retrying failed posts."""
    from streams.alert_delivery import run_delivery
    from tokenops.cli import configure_logging
    from tokenops.settings import get_settings

    configure_logging()
    run_delivery(get_settings())
