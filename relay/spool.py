"""An fsync'd, append-only on-disk spool for usage events the broker could not take.

Layout: numbered segment files `seg-<n>.log`, one record a line: `<key>\\t<value>\\n` (keys are
tenant ids, which never contain tabs or newlines; values are compact JSON). Segments are read
back oldest first and deleted only after every record in them was acknowledged by Kafka, so a
crash at any point loses nothing (it may publish a record twice; consumers dedupe by event_id).
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

Record = tuple[bytes, bytes]


class DiskSpool:
    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._records = sum(self._count(path) for path in self.segments())
        self._next = max((self._number(p) for p in self.segments()), default=0) + 1
        self._current: Path | None = None

    @staticmethod
    def _number(path: Path) -> int:
        return int(path.stem.split("-")[1])

    @staticmethod
    def _count(path: Path) -> int:
        with path.open("rb") as handle:
            return sum(1 for line in handle if line.endswith(b"\n"))

    def segments(self) -> list[Path]:
        return sorted(self._dir.glob("seg-*.log"), key=self._number)

    @property
    def depth(self) -> int:
        """Records waiting on disk."""
        return self._records

    def append(self, records: list[Record]) -> None:
        """Write and fsync `records`; returns only once they are durable."""
        if not records:
            return
        payload = b"".join(key + b"\t" + value + b"\n" for key, value in records)
        with self._lock:
            if self._current is None:
                self._current = self._dir / f"seg-{self._next:012d}.log"
                self._next += 1
            fd = os.open(self._current, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, payload)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._records += len(records)

    def seal(self) -> None:
        """Start a new segment for later appends so the older ones can be drained."""
        with self._lock:
            self._current = None

    def read(self, segment: Path) -> list[Record]:
        records: list[Record] = []
        with segment.open("rb") as handle:
            for line in handle:
                if not line.endswith(b"\n"):
                    continue  # a torn final write from a crash: it was never acknowledged
                key, _, value = line[:-1].partition(b"\t")
                records.append((key, value))
        return records

    def adopt(self, segments: list[Path]) -> int:
        """Move another spool's segments (oldest first) in after this one's own; they are
        replayed like its own. Returns how many moved."""
        with self._lock:
            for segment in segments:
                records = self._count(segment)
                segment.rename(self._dir / f"seg-{self._next:012d}.log")
                self._next += 1
                self._records += records
        return len(segments)

    def remove(self, segment: Path, records: int) -> None:
        with self._lock:
            segment.unlink(missing_ok=True)
            self._records = max(0, self._records - records)


SLOT_LIMIT = 256


def slot_directory(base: Path, number: int) -> Path:
    """Slot 0 is the spool directory itself (where a single relay has always spooled)."""
    return base if number == 0 else base / f"worker-{number}"


class SpoolSlot:
    """One relay process's part of the spool directory, held by an exclusive flock.

    Relay workers sharing a port each claim the lowest free slot, so no two ever append to or
    drain the same segments. Every worker also adopts, when it starts and then every few
    seconds, the segments of any slot nobody holds (a relay that ran with more workers, a
    worker replaced by a reload, one that died): they move into its own spool and are
    published with it, so nothing spooled waits for a restart. The lock goes with the process,
    also when it is killed."""

    def __init__(self, base: Path, number: int, lock_fd: int) -> None:
        self.base = base
        self.number = number
        self.directory = slot_directory(base, number)
        self._lock_fd = lock_fd

    @classmethod
    def claim(cls, base: Path) -> SpoolSlot:
        base.mkdir(parents=True, exist_ok=True)
        for number in range(SLOT_LIMIT):
            fd = _try_lock(base, number)
            if fd is None:
                continue
            slot = cls(base, number, fd)
            slot.directory.mkdir(parents=True, exist_ok=True)
            return slot
        raise OSError(f"all {SLOT_LIMIT} spool slots under {base} are held by running relays")

    def adopt_unheld(self, spool: DiskSpool) -> int:
        """Move the segments of every slot no process holds into `spool`; returns how many."""
        others = {0} | {
            int(path.name.removeprefix("worker-"))
            for path in self.base.glob("worker-*")
            if path.name.removeprefix("worker-").isdigit()
        }
        adopted = 0
        for number in sorted(others - {self.number}):
            source = slot_directory(self.base, number)
            if not any(source.glob("seg-*.log")):
                continue
            fd = _try_lock(self.base, number)
            if fd is None:
                continue  # a running relay owns it and drains it itself
            try:
                adopted += spool.adopt(sorted(source.glob("seg-*.log"), key=DiskSpool._number))
            finally:
                os.close(fd)
        return adopted

    def release(self) -> None:
        os.close(self._lock_fd)


def _try_lock(base: Path, number: int) -> int | None:
    fd = os.open(base / f".slot-{number}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
