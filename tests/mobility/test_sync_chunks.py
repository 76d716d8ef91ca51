"""The sync's calls to the registry's resolve endpoint: persons and answers as columns,
chunks in flight together, answers handed on in file order as they come in, one after
another when an ID number recurs, the first failure raised, and a malformed answer a
failure of the sync (503), never a row dropped or matched to another person's result."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from services.mobility.errors import RegistryUnavailable
from services.mobility.routes.sync import _results
from services.mobility.service.sync import RESOLVE_CONCURRENCY, _resolved


def persons(n: int) -> dict[str, list[Any]]:
    return {"index": list(range(n)), "id_number": [f"{i:018d}" for i in range(n)]}


async def answers(resolve: Any, columns: dict[str, list[Any]], chunk: int) -> list[Any]:
    return [answer async for answer in _resolved(resolve, columns, chunk)]


async def test_chunks_overlap_and_answers_keep_the_file_order() -> None:
    flying, most = 0, 0

    async def resolve(part: dict[str, list[Any]]) -> dict[str, list[Any]]:
        nonlocal flying, most
        flying += 1
        most = max(most, flying)
        await asyncio.sleep(0.01 if part["index"][0] == 0 else 0)
        flying -= 1
        return {"index": part["index"]}

    got = await answers(resolve, persons(10), 3)
    assert [a["index"] for a in got] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert most == RESOLVE_CONCURRENCY


async def test_each_answer_is_handed_on_while_later_chunks_are_still_out() -> None:
    released = asyncio.Event()
    seen: list[int] = []

    async def resolve(part: dict[str, list[Any]]) -> dict[str, list[Any]]:
        seen.append(part["index"][0])
        if part["index"][0] != 0:
            await released.wait()
        return {"index": part["index"]}

    stream = _resolved(resolve, persons(6), 2)
    first = await anext(stream)  # the first chunk's answer, the others still out
    assert first == {"index": [0, 1]} and seen[:2] == [0, 2]
    released.set()
    assert [a["index"] async for a in stream] == [[2, 3], [4, 5]]


async def test_a_recurring_id_number_goes_one_chunk_at_a_time() -> None:
    flying, most = 0, 0

    async def resolve(part: dict[str, list[Any]]) -> dict[str, list[Any]]:
        nonlocal flying, most
        flying += 1
        most = max(most, flying)
        await asyncio.sleep(0)
        flying -= 1
        return {"index": part["index"]}

    columns = persons(6)
    columns["id_number"][5] = " " + columns["id_number"][0].lower() + " "
    assert len(await answers(resolve, columns, 2)) == 3
    assert most == 1


async def test_the_first_failure_is_raised_and_no_more_calls_go_out() -> None:
    called: list[int] = []

    async def resolve(part: dict[str, list[Any]]) -> dict[str, list[Any]]:
        called.append(part["index"][0])
        await asyncio.sleep(0)
        if part["index"][0] in (2, 4):
            raise RuntimeError(f"chunk {part['index'][0]}")
        return {"index": part["index"]}

    with pytest.raises(RuntimeError, match="chunk 2"):
        await answers(resolve, persons(12), 2)
    assert 6 not in called and 8 not in called


async def test_when_the_caller_stops_no_more_calls_go_out_and_none_is_left_running() -> None:
    called: list[int] = []
    finished: list[int] = []

    async def resolve(part: dict[str, list[Any]]) -> dict[str, list[Any]]:
        called.append(part["index"][0])
        await asyncio.sleep(0.01)
        finished.append(part["index"][0])
        return {"index": part["index"]}

    stream = _resolved(resolve, persons(10), 2)
    await anext(stream)
    await stream.aclose()  # the sync failed on its side
    assert sorted(finished) == sorted(called)  # the calls in flight were waited for
    assert len(called) < 5


def body(**results: Any) -> bytes:
    return json.dumps({"results": results}).encode()


def test_the_answer_is_read_as_columns() -> None:
    member = str(uuid.uuid4())
    got = _results(
        body(
            member_id=[member, None],
            created=[True, False],
            residence_org_id=[None, None],
            error=[None, "x"],
        ),
        2,
    )
    assert got == {
        "member_id": [member, None],
        "created": [True, False],
        "residence_org_id": [None, None],
        "error": [None, "x"],
    }


@pytest.mark.parametrize(
    "answer",
    [
        b"not json",
        b"[]",
        b'{"results": []}',
        body(member_id=[None], created=[False], residence_org_id=[None]),  # a column missing
        body(member_id=[None], created=[False], residence_org_id=[None], error=[None, None]),
        body(member_id=[], created=[], residence_org_id=[], error=[]),  # a person left out
        body(member_id="x", created=[False], residence_org_id=[None], error=[None]),
    ],
)
def test_a_malformed_answer_fails_the_sync_as_a_whole(answer: bytes) -> None:
    with pytest.raises(RegistryUnavailable):
        _results(answer, 1)
