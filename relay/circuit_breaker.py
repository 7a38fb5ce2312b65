"""Per-target circuit breakers: stop sending to a provider target that keeps failing.

CLOSED: requests flow; `threshold` consecutive failures open it. OPEN: the target is skipped
until `cooldown_s` has passed. HALF-OPEN: one probe request is let through; success closes the
breaker, failure opens it for another cooldown.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class CircuitBreaker:
    threshold: int = 5
    cooldown_s: float = 10.0
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        if time.monotonic() - self.opened_at >= self.cooldown_s:
            return "half-open"
        return "open"

    def allow(self) -> bool:
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self.probing:
            self.probing = True
            return True
        return False

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.probing = False

    def failure(self) -> None:
        self.failures += 1
        self.probing = False
        if self.opened_at is not None or self.failures >= self.threshold:
            self.opened_at = time.monotonic()


class CircuitBreakers:
    def __init__(self, threshold: int = 5, cooldown_s: float = 10.0) -> None:
        self._threshold = threshold
        self._cooldown_s = cooldown_s
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}

    def __getitem__(self, key: tuple[str, str]) -> CircuitBreaker:
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = CircuitBreaker(self._threshold, self._cooldown_s)
        return breaker

    def states(self) -> dict[str, str]:
        return {f"{p}/{m}": b.state for (p, m), b in self._breakers.items()}
