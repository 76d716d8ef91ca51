"""What the benchmarks' load generators share."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def no_gc_pauses() -> Iterator[None]:
    """The generator's cyclic garbage collector off while it sends a bounded load (and
    once run before): a full collection of this process's heap stalled its event loop for
    ~100 ms every few runs, and the requests it then sent late — up to a fifth of a
    second's worth at 400 req/s — were counted as the system's latency (their latency
    counts from when they were due), or as a turn's lost throughput. Reference counting
    still frees what has no cycles; the collector runs again when the load ends."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
