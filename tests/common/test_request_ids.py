"""Request ids the apps make: 32 hex digits, never the same twice, in a forked worker too."""

from __future__ import annotations

import multiprocessing
import re

from common.middleware import request_id_from

HEX32 = re.compile(r"^[0-9a-f]{32}$")


def _made_in_child(out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    out.put([request_id_from(None) for _ in range(1000)])


def test_made_ids_are_hex_and_distinct() -> None:
    made = [request_id_from(None) for _ in range(10_000)]
    assert all(HEX32.match(rid) for rid in made)
    assert len(set(made)) == len(made)


def test_a_forked_process_makes_ids_of_its_own() -> None:
    ours = [request_id_from(None) for _ in range(1000)]
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    child = context.Process(target=_made_in_child, args=(out,))
    child.start()
    theirs = out.get(timeout=30)
    child.join(timeout=30)
    ours += [request_id_from(None) for _ in range(1000)]
    assert all(HEX32.match(rid) for rid in theirs)
    assert not set(ours) & set(theirs)


def test_a_safe_given_id_is_kept_and_an_unsafe_one_replaced() -> None:
    assert request_id_from(b"abc-123:x.y_z") == "abc-123:x.y_z"
    for unsafe in (b"bad id", b"a" * 129, b"\xff\xfe", b""):
        assert HEX32.match(request_id_from(unsafe))
