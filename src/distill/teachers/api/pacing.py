"""How the API client waits: between retries (exponential backoff with full jitter, or the server's `Retry-After`),
and before each request start (the client-side rate limit). Clocks, sleeps and random numbers are passed in, so
tests run on a fake clock and never wait for real.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import random
import threading
import time
from collections.abc import Callable, Mapping

BACKOFF_BASE_S = 1.0  # the first retry waits up to this long, the n-th up to BACKOFF_BASE_S · 2^(n−1)
MAX_WAIT_S = 60.0  # no single wait between attempts is longer, whatever the backoff or the server asks


def backoff_delay(retry: int, rng: random.Random, base_s: float = BACKOFF_BASE_S, cap_s: float = MAX_WAIT_S) -> float:
    """The wait before the `retry`-th retry (1-based) when the server named none: "full jitter", uniform in
    [0, min(cap, base · 2^(retry−1))] (Brooker, "Exponential Backoff and Jitter", AWS Architecture Blog, 2015), so
    clients that failed together do not come back together."""
    assert retry >= 1
    return rng.uniform(0.0, min(cap_s, base_s * 2.0 ** (retry - 1)))


def parse_retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds the server asks a client to wait, from `retry-after-ms` (OpenAI's) or `Retry-After` (RFC 9110: a
    number of seconds, or an HTTP date, read against `now`, a Unix time); None when absent or unreadable. A date in
    the past means 0."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        seconds = _number(millis)
        if seconds is not None:
            return max(0.0, seconds / 1000.0)
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _number(value)
    if seconds is None:
        try:
            when = email.utils.parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000": UTC by RFC 5322
            when = when.replace(tzinfo=datetime.UTC)
        seconds = when.timestamp() - now
    return max(0.0, seconds)


def _number(text: str) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def retry_wait(retry: int, retry_after: float | None, rng: random.Random) -> float:
    """The wait before the `retry`-th retry: the server's `Retry-After` when it gave one, else the jittered backoff;
    capped at MAX_WAIT_S either way."""
    if retry_after is not None:
        return min(retry_after, MAX_WAIT_S)
    return backoff_delay(retry, rng)


class RateLimiter:
    """At most `per_minute` request starts per minute over all threads, as evenly spaced starts: each start takes the
    next free slot, 60 / per_minute seconds after the one before, and sleeps until it. Slots are handed out under a
    lock, so threads never share one; an idle spell earns no burst afterwards. `per_minute=None`: no limit."""

    def __init__(self, per_minute: float | None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        assert per_minute is None or per_minute > 0
        self.interval_s = 0.0 if per_minute is None else 60.0 / per_minute
        self._clock, self._sleep = clock, sleep
        self._next_slot = -math.inf
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Wait for this caller's slot; returns the seconds waited."""
        if self.interval_s == 0.0:
            return 0.0
        with self._lock:
            now = self._clock()
            slot = max(now, self._next_slot)
            self._next_slot = slot + self.interval_s
        wait = slot - now
        if wait > 0:
            self._sleep(wait)
        return wait
