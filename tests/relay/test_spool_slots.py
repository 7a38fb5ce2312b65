"""Relay workers sharing a port each spool into their own slot, and nothing a gone worker
spooled is left behind: a running relay takes it over and publishes it."""

from __future__ import annotations

import time
from pathlib import Path

from relay.spool import DiskSpool, SpoolSlot
from relay.usage_publisher import UsagePublisher
from tests.support import free_port


def spooled(directory: Path, *values: str) -> None:
    spool = DiskSpool(directory)
    for value in values:
        spool.append([(b"acme", value.encode())])
        spool.seal()


def test_workers_claim_distinct_slots_and_a_held_slot_is_never_taken(tmp_path: Path) -> None:
    first, second = SpoolSlot.claim(tmp_path), SpoolSlot.claim(tmp_path)
    try:
        assert (first.number, first.directory) == (0, tmp_path)
        assert (second.number, second.directory) == (1, tmp_path / "worker-1")
        spooled(second.directory, "in-flight")
        assert first.adopt_unheld(DiskSpool(first.directory)) == 0  # slot 1 is held
        assert list((tmp_path / "worker-1").glob("seg-*.log")) != []
    finally:
        first.release()
        second.release()


def test_unheld_spools_are_adopted_after_the_adopters_own_in_order(tmp_path: Path) -> None:
    spooled(tmp_path, "own-1", "own-2")
    spooled(tmp_path / "worker-1", "w1-1", "w1-2")
    spooled(tmp_path / "worker-3", "w3-1")
    slot = SpoolSlot.claim(tmp_path)
    try:
        spool = DiskSpool(slot.directory)
        assert (slot.number, slot.adopt_unheld(spool)) == (0, 3)
        values = [v.decode() for s in spool.segments() for _, v in spool.read(s)]
        assert values == ["own-1", "own-2", "w1-1", "w1-2", "w3-1"]
        assert spool.depth == 5
        assert not list((tmp_path / "worker-1").glob("seg-*.log"))
        assert not list((tmp_path / "worker-3").glob("seg-*.log"))
    finally:
        slot.release()


def test_a_running_relay_takes_over_a_slot_as_soon_as_its_worker_is_gone(tmp_path: Path) -> None:
    running = SpoolSlot.claim(tmp_path)
    publisher = UsagePublisher(
        f"127.0.0.1:{free_port()}",  # Kafka away: what is adopted stays in the spool
        running.directory,
        adopt=running.adopt_unheld,
        adopt_interval_s=0.2,
    )
    publisher.start()
    try:
        leaving = SpoolSlot.claim(tmp_path)
        spooled(leaving.directory, "a", "b", "c")
        time.sleep(0.6)
        assert publisher.spool.depth == 0  # held: not touched
        leaving.release()
        deadline = time.monotonic() + 10
        while publisher.spool.depth < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert publisher.spool.depth == 3
        assert not list((tmp_path / "worker-1").glob("seg-*.log"))
    finally:
        publisher.close()
        running.release()
