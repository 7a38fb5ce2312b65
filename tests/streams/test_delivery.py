"""The worker's consumer hands a record to its stream inline when nothing has to wait, and keeps
faust's race (a rebalance abandons a delivery that waits) when something does."""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path

import pytest

from streams.app import create_app
from streams.delivery import EagerConsumer
from tokenops.settings import Settings


def consumer(tmp_path: Path) -> EagerConsumer:
    app = create_app(
        Settings(kafka_bootstrap="127.0.0.1:1", config_dir=tmp_path, data_dir=tmp_path)
    )
    found = app.consumer
    assert isinstance(found, EagerConsumer)  # the worker's app consumes with it
    return found


def test_a_delivery_that_never_waits_finishes_inline_without_a_task(tmp_path: Path) -> None:
    async def scenario() -> None:
        eager = consumer(tmp_path)
        suspended = asyncio.Event()
        tasks_before = len(asyncio.all_tasks())
        seen: list[int] = []

        async def deliver() -> str:
            seen.append(len(asyncio.all_tasks()))
            return "delivered"

        delivery = deliver()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the unused suspend wait must be closed, not leaked
            result = await eager.wait_first(delivery, suspended.wait())
        assert result.done == [delivery] and result.results == ["delivered"]
        assert not result.stopped
        assert seen == [tasks_before]  # it ran inside the caller's task

    asyncio.run(scenario())


def test_a_delivery_that_waits_continues_where_it_stopped(tmp_path: Path) -> None:
    async def scenario() -> None:
        eager = consumer(tmp_path)
        room = asyncio.Event()
        steps: list[str] = []

        async def deliver() -> str:
            steps.append("before")
            await room.wait()  # a full stream buffer
            steps.append("after")
            return "delivered"

        asyncio.get_running_loop().call_later(0.05, room.set)
        delivery = deliver()
        result = await eager.wait_first(delivery, asyncio.Event().wait())
        assert steps == ["before", "after"]
        assert result.done == [delivery] and result.results == ["delivered"]

    asyncio.run(scenario())


def test_a_rebalance_abandons_a_delivery_that_waits(tmp_path: Path) -> None:
    async def scenario() -> None:
        eager = consumer(tmp_path)
        suspend_flow = asyncio.Event()
        outcome: list[str] = []

        async def deliver() -> None:
            try:
                await asyncio.Event().wait()  # never gets room
                outcome.append("delivered")
            except asyncio.CancelledError:
                outcome.append("abandoned")
                raise

        suspending = suspend_flow.wait()
        asyncio.get_running_loop().call_later(0.05, suspend_flow.set)
        result = await eager.wait_first(deliver(), suspending)
        await asyncio.sleep(0)  # let the cancelled delivery run its handler
        assert result.done == [suspending]
        assert outcome == ["abandoned"]

    asyncio.run(scenario())


def test_a_delivery_that_fails_at_once_raises_to_the_fetcher(tmp_path: Path) -> None:
    async def scenario() -> None:
        eager = consumer(tmp_path)

        async def deliver() -> None:
            raise ValueError("undecodable")

        with pytest.raises(ValueError, match="undecodable"):
            await eager.wait_first(deliver(), asyncio.Event().wait())

    asyncio.run(scenario())
