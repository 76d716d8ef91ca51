"""The benchmarks' load generators send without the cyclic collector's pauses, and leave
it as they found it, whatever happens during the load."""

from __future__ import annotations

import gc

import pytest

from bench._generator import no_gc_pauses


def test_collector_is_off_during_the_load_and_back_after_it() -> None:
    assert gc.isenabled()
    with no_gc_pauses():
        during = gc.isenabled()
    assert (during, gc.isenabled()) == (False, True)


def test_collector_is_back_after_a_failed_load() -> None:
    with pytest.raises(RuntimeError), no_gc_pauses():
        raise RuntimeError("the service went away")
    assert gc.isenabled()
