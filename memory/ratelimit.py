"""A token bucket per key (per bearer token): `rate_per_minute` on average, bursts of `burst`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import RateLimited

# Buckets idle long enough to be full again are forgotten, so revoked or one-off tokens cost nothing.
_SWEEP_EVERY = 1_024


@dataclass
class RateLimiter:
    rate_per_minute: float
    burst: int
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # key -> (tokens, last time)
    _calls: int = 0

    @property
    def enabled(self) -> bool:
        return self.rate_per_minute > 0 and self.burst > 0

    def take(self, key: str) -> None:
        """Spend one request for `key`, or raise `RateLimited` saying when the next one is allowed."""
        if not self.enabled:
            return
        rate = self.rate_per_minute / 60.0
        moment = self.clock()
        tokens, last = self._buckets.get(key, (float(self.burst), moment))
        tokens = min(float(self.burst), tokens + (moment - last) * rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, moment)
            raise RateLimited((1.0 - tokens) / rate, self.rate_per_minute, self.burst)
        self._buckets[key] = (tokens - 1.0, moment)
        self._calls += 1
        if self._calls % _SWEEP_EVERY == 0:
            self._sweep(moment, rate)

    def _sweep(self, moment: float, rate: float) -> None:
        full_after = self.burst / rate
        for key, (_, last) in list(self._buckets.items()):
            if moment - last > full_after:
                del self._buckets[key]
