"""Relay workers sharing a port each spool into their own slot, and nothing a gone worker
spooled is left behind: the next relay to start takes it over."""

from __future__ import annotations

from pathlib import Path

from relay.spool import DiskSpool, SpoolSlot


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
        third = SpoolSlot.claim(tmp_path)
        assert third.number == 2 and third.adopted == 0  # slot 1 is held: left to its owner
        third.release()
        assert [p.name for p in (tmp_path / "worker-1").glob("seg-*.log")] != []
    finally:
        first.release()
        second.release()


def test_a_starting_relay_adopts_unheld_spools_after_its_own_in_order(tmp_path: Path) -> None:
    spooled(tmp_path, "own-1", "own-2")
    spooled(tmp_path / "worker-1", "w1-1", "w1-2")
    spooled(tmp_path / "worker-3", "w3-1")
    slot = SpoolSlot.claim(tmp_path)
    try:
        assert (slot.number, slot.adopted) == (0, 5 - 2)
        spool = DiskSpool(slot.directory)
        values = [v.decode() for s in spool.segments() for _, v in spool.read(s)]
        assert values == ["own-1", "own-2", "w1-1", "w1-2", "w3-1"]
        assert spool.depth == 5
        assert not list((tmp_path / "worker-1").glob("seg-*.log"))
        assert not list((tmp_path / "worker-3").glob("seg-*.log"))
    finally:
        slot.release()
