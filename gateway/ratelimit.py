"""Rate limits per caller: a token bucket of `burst` requests refilled at `rate_per_s`.

The caller is the authenticated principal's subject (a user or an API key) when the auth
step set one, else the client's address. In-process buckets by default; with `REDIS_URL`
every gateway replica shares one budget per caller through an atomic Lua script that uses
the Redis server's clock. The limiter fails open: when Redis is unreachable the request
goes through and a warning is logged (at most every few seconds), never a 500."""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.requests import Request

from common.errors import TooManyRequests

log = logging.getLogger("lianxin.gateway.ratelimit")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    remaining: int
    retry_after_s: float = 0.0


class RateLimitExceeded(TooManyRequests):
    def __init__(self, retry_after_s: float, limit: int) -> None:
        seconds = max(1, math.ceil(retry_after_s))
        super().__init__(
            f"Too many requests; retry in {seconds} s.",
            headers={
                "Retry-After": str(seconds),
                "RateLimit-Limit": str(limit),
                "RateLimit-Remaining": "0",
                "RateLimit-Reset": str(seconds),
            },
        )


class Limiter(Protocol):
    rate_per_s: float
    burst: int

    async def hit(self, key: str) -> Decision: ...

    async def aclose(self) -> None: ...


class MemoryLimiter:
    """Token buckets in this process, at most `max_keys` of them (least recently used go)."""

    def __init__(
        self,
        *,
        rate_per_s: float,
        burst: int,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate_per_s = rate_per_s
        self.burst = max(1, burst)
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    async def hit(self, key: str) -> Decision:
        return self.take(key)

    def take(self, key: str) -> Decision:
        """`hit`, without waiting for anything (the buckets are in this process)."""
        now = self._clock()
        tokens, last = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - last) * self.rate_per_s)
        if tokens >= 1.0:
            tokens -= 1.0
            decision = Decision(True, int(tokens))
        else:
            decision = Decision(False, 0, (1.0 - tokens) / self.rate_per_s)
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return decision

    async def aclose(self) -> None:
        self._buckets.clear()


# KEYS[1] bucket; ARGV rate per second, burst. Returns {allowed, remaining, retry_after_s};
# numbers travel as strings (Redis truncates Lua numbers to integers).
BUCKET_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local retry = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  retry = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(math.floor(tokens)), tostring(retry)}
"""


class RedisLimiter:
    """One budget per caller shared by every replica using the same Redis."""

    def __init__(
        self,
        url: str,
        *,
        rate_per_s: float,
        burst: int,
        prefix: str = "lianxin:ratelimit:",
        timeout_s: float = 0.25,
        retry_after_failure_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from redis.asyncio import Redis

        self.rate_per_s = rate_per_s
        self.burst = max(1, burst)
        self._prefix = prefix
        self._redis: Any = Redis.from_url(
            url,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            retry_on_timeout=False,
        )
        self._script = self._redis.register_script(BUCKET_SCRIPT)
        self._clock = clock
        self._retry_after_failure_s = retry_after_failure_s
        self._skip_until = 0.0
        self._warned_at: float | None = None

    async def hit(self, key: str) -> Decision:
        from redis.exceptions import RedisError

        now = self._clock()
        if now < self._skip_until:
            return Decision(True, self.burst)
        try:
            allowed, remaining, retry = await self._script(
                keys=[self._prefix + key], args=[self.rate_per_s, self.burst]
            )
        except (RedisError, OSError) as exc:
            # Fail open, and leave Redis alone for a moment so a dead one costs nothing.
            self._skip_until = now + self._retry_after_failure_s
            if self._warned_at is None or now - self._warned_at >= 30.0:
                self._warned_at = now
                log.warning("rate limiter failing open: Redis unreachable (%s)", type(exc).__name__)
            return Decision(True, self.burst)
        return Decision(bool(int(allowed)), int(float(remaining)), float(retry))

    async def aclose(self) -> None:
        await self._redis.aclose()


def make_limiter(*, redis_url: str | None, rate_per_s: float, burst: int) -> Limiter:
    if redis_url:
        return RedisLimiter(redis_url, rate_per_s=rate_per_s, burst=burst)
    return MemoryLimiter(rate_per_s=rate_per_s, burst=burst)


def caller_key(request: Request) -> str:
    """`principal:<subject>` once the auth step identified the caller, else `addr:<ip>`."""
    principal = getattr(request.state, "principal", None)
    return key_of(getattr(principal, "subject", None), request.scope.get("client"))


def key_of(subject: str | None, client: tuple[str, int] | None) -> str:
    """The budget's key: the authenticated subject's, else the client address's."""
    if subject:
        return f"principal:{subject}"
    return f"addr:{client[0] if client else 'unknown'}"


async def enforce(request: Request) -> None:
    """Spend one token of the caller's budget or raise a 429 problem with `Retry-After`.
    Usable as a route dependency on the gateway's own routes."""
    limiter: Limiter | None = getattr(request.app.state, "limiter", None)
    if limiter is None:
        return
    decision = await limiter.hit(caller_key(request))
    if not decision.allowed:
        raise RateLimitExceeded(decision.retry_after_s, limiter.burst)
