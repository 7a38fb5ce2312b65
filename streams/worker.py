"""`tokenops streams`: run the faust worker until SIGINT/SIGTERM."""

from __future__ import annotations

import faust

from streams.app import create_app
from tokenops.broker import require_broker
from tokenops.settings import Settings


def run_worker(settings: Settings) -> None:
    require_broker(settings.bootstrap)
    app = create_app(settings)
    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.execute_from_commandline()
