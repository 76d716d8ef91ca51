"""A circuit breaker per upstream: after `threshold` consecutive connection failures the
circuit opens and requests fail at once (no connect attempt) for `reset_after_s`; then one
request goes through as a probe (half-open): its success closes the circuit, its failure
opens it again for another cool-down. A service that comes back heals without a restart.

Only connection failures count: an upstream that answers, even with a 5xx, is reachable."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from enum import StrEnum

from common.errors import ServiceUnavailable

log = logging.getLogger("lianxin.gateway.breaker")


class CircuitState(StrEnum):
    closed = "closed"
    open = "open"
    half_open = "half_open"


class CircuitOpen(ServiceUnavailable):
    """The upstream's circuit is open: answered without trying to connect."""

    def __init__(self, service: str, retry_after_s: float) -> None:
        seconds = max(1, math.ceil(retry_after_s))
        super().__init__(
            f"The {service} service is unavailable; retry in {seconds} s.",
            headers={"Retry-After": str(seconds)},
        )


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        threshold: int,
        reset_after_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.threshold = max(1, threshold)
        self.reset_after_s = reset_after_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> CircuitState:
        if self._opened_at is None:
            return CircuitState.closed
        if self._probing or self._clock() - self._opened_at >= self.reset_after_s:
            return CircuitState.half_open
        return CircuitState.open

    def acquire(self) -> bool:
        """Let a request through or raise `CircuitOpen`; True when it is the half-open probe
        (the caller must then report `success`, `failure` or `release`)."""
        if self._opened_at is None:
            return False
        waited = self._clock() - self._opened_at
        if self._probing or waited < self.reset_after_s:
            raise CircuitOpen(self.name, max(self.reset_after_s - waited, 0.0))
        self._probing = True
        return True

    def success(self) -> None:
        if self._opened_at is not None:
            log.info("circuit closed", extra={"upstream": self.name})
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def failure(self) -> None:
        self._failures += 1
        if self._probing or (self._opened_at is None and self._failures >= self.threshold):
            if self._opened_at is None:
                log.warning(
                    "circuit opened after %d connection failures to %s",
                    self._failures,
                    self.name,
                )
            self._opened_at = self._clock()
        self._probing = False

    def release(self, probe: bool) -> None:
        """The probe ended without telling anything about the upstream (client went away):
        let the next request probe instead."""
        if probe:
            self._probing = False
