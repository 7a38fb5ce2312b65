"""How the streams worker hands fetched records to its agents: without four tasks per record.

faust's fetch loop delivers every record with
`wait_first(callback(message), suspend_flow.wait())`, so that a rebalance can abandon a delivery
that waits (on a full stream buffer, a suspended flow or a full producer buffer). That call
creates four asyncio tasks and an `asyncio.wait` per record: about 120 µs of the ~200 µs faust
spent per record on this project's 2-core reference machine, more than pricing an event.

Almost no delivery waits. `EagerConsumer` runs the delivery's first step inline. If it finishes
there, it never yielded to the event loop, so nothing (no rebalance, no stop) can have happened
in between: the outcome is the one faust's race gives when the delivery wins, and no task is
created. A delivery that does have to wait continues in faust's own `wait_first`, from the point
where it stopped, so a rebalance still abandons it exactly as before. Python 3.12's eager task
factory does the same for every task; this applies it only where the worker pays for it.

faust's Monitor sensor also runs four hooks per record to keep statistics for faust's web pages.
The worker runs without them (web disabled) and publishes no monitor figures, so
`StatslessMonitor` keeps the monitor faust expects but skips the per-record bookkeeping (about
10 µs per record here).
"""

from __future__ import annotations

import inspect
from collections.abc import Coroutine, Generator
from typing import Any

import faust
from faust.sensors import Monitor
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, EventT, StreamT, TransportT
from faust.types.tuples import Message
from mode.services import WaitArgT, WaitResults
from mode.utils.times import Seconds


class _Rest:
    """The rest of a coroutine that already ran its first step and now waits on `waiting`.

    Awaiting it hands `waiting` to the task that runs it, then drives the coroutine with what
    the task sends or throws, until the coroutine returns: the coroutine cannot tell that its
    first step ran outside the task.
    """

    def __init__(self, coro: Coroutine[Any, Any, Any], waiting: Any) -> None:
        self._coro = coro
        self._waiting = waiting

    def __await__(self) -> Generator[Any, None, Any]:
        coro, waiting = self._coro, self._waiting
        while True:
            try:
                yield waiting
            except BaseException as exc:  # thrown in by the task, e.g. a cancel
                try:
                    waiting = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    waiting = coro.send(None)
                except StopIteration as done:
                    return done.value


async def _finish(rest: _Rest) -> Any:
    return await rest


class EagerConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer whose `wait_first` starts its first coroutine inline."""

    async def wait_first(self, *coros: WaitArgT, timeout: Seconds = None) -> WaitResults:  # type: ignore[assignment]
        first = coros[0] if coros else None
        if (
            not inspect.iscoroutine(first)
            or timeout is not None
            or self._stopped.is_set()
            or self._crashed.is_set()
        ):
            return await super().wait_first(*coros, timeout=timeout)
        others = coros[1:]
        try:
            waiting = first.send(None)
        except StopIteration as done:  # finished without yielding: the delivery won the race
            for other in others:
                if inspect.iscoroutine(other):
                    other.close()
            return WaitResults([first], [done.value], False)
        except BaseException:
            for other in others:
                if inspect.iscoroutine(other):
                    other.close()
            raise
        rest = _finish(_Rest(first, waiting))
        raced = await super().wait_first(rest, *others)
        return WaitResults(
            [first if c is rest else c for c in raced.done], raced.results, raced.stopped
        )


class StatslessMonitor(Monitor):
    """faust's Monitor without the per-record statistics (see the module docstring)."""

    def on_message_in(self, tp: TP, offset: int, message: Message) -> None:
        pass

    def on_stream_event_in(
        self, tp: TP, offset: int, stream: StreamT, event: EventT
    ) -> dict[Any, Any] | None:
        return None

    def on_stream_event_out(
        self,
        tp: TP,
        offset: int,
        stream: StreamT,
        event: EventT,
        state: dict[Any, Any] | None = None,
    ) -> None:
        pass

    def on_message_out(self, tp: TP, offset: int, message: Message) -> None:
        pass


class Transport(faust_aiokafka.Transport):
    Consumer = EagerConsumer


class App(faust.App):
    """A faust app whose worker consumes with `EagerConsumer` (producer side unchanged) and
    monitors with `StatslessMonitor`."""

    def __init__(self, id: str, **options: Any) -> None:
        options.setdefault("Monitor", StatslessMonitor)
        super().__init__(id, **options)

    def _new_transport(self) -> TransportT:
        return Transport(self.conf.broker_consumer, self)
