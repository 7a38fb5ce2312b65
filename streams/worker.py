"""`tokenops streams`: run the faust worker until SIGINT/SIGTERM."""

from __future__ import annotations

from typing import Any

import aiokafka
import faust
import mode.loop

from streams.app import create_app
from tokenops.broker import require_broker
from tokenops.collector import freeze_startup_objects, tune_collector
from tokenops.settings import Settings


class PromptConsumer(aiokafka.AIOKafkaConsumer):
    """faust's consumer, asking the broker to answer a fetch within 50 ms.

    faust hard-codes fetch_max_wait_ms=1500. The embedded broker (Tansu) holds a fetch that
    spans partitions without new data for most of that wait even when another partition has
    some, which put up to 0.8 s between a model call and the agent seeing it. faust creates its
    consumer from the aiokafka module's attribute, so the worker process swaps this class in.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["fetch_max_wait_ms"] = 50
        super().__init__(*args, **kwargs)


def run_worker(settings: Settings) -> None:
    require_broker(settings.bootstrap)
    # uvloop runs the loop's own work (callbacks, futures, tasks, sockets) in C: the agent's
    # per-event machinery is mostly that, so a worker takes more events per core.
    mode.loop.use("uvloop")
    aiokafka.AIOKafkaConsumer = PromptConsumer  # faust reads it when it builds its consumer
    # The worker allocates a few dozen objects per event and keeps the ledger's marks for hours.
    tune_collector()
    app = create_app(settings)
    freeze_startup_objects()
    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.execute_from_commandline()
