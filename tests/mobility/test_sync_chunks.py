"""The sync's calls to the registry's resolve endpoint: chunks in flight together, answers
kept in file order, one after another when an ID number recurs, the first failure raised."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.mobility.service.sync import RESOLVE_CONCURRENCY, _resolve_all


def persons(n: int) -> list[dict[str, Any]]:
    return [{"index": i, "id_number": f"{i:018d}"} for i in range(n)]


async def test_chunks_overlap_and_answers_keep_the_file_order() -> None:
    flying, most = 0, 0

    async def resolve(part: list[dict[str, Any]]) -> list[dict[str, Any]]:
        nonlocal flying, most
        flying += 1
        most = max(most, flying)
        await asyncio.sleep(0.01 if part[0]["index"] == 0 else 0)
        flying -= 1
        return [{"index": p["index"]} for p in part]

    answers = await _resolve_all(resolve, persons(10), 3)
    assert [[r["index"] for r in a] for a in answers] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert most == RESOLVE_CONCURRENCY


async def test_a_recurring_id_number_goes_one_chunk_at_a_time() -> None:
    flying, most = 0, 0

    async def resolve(part: list[dict[str, Any]]) -> list[dict[str, Any]]:
        nonlocal flying, most
        flying += 1
        most = max(most, flying)
        await asyncio.sleep(0)
        flying -= 1
        return [{"index": p["index"]} for p in part]

    rows = persons(6)
    rows[5]["id_number"] = " " + rows[0]["id_number"].lower() + " "
    assert len(await _resolve_all(resolve, rows, 2)) == 3
    assert most == 1


async def test_the_first_failure_is_raised_and_no_more_calls_go_out() -> None:
    called: list[int] = []

    async def resolve(part: list[dict[str, Any]]) -> list[dict[str, Any]]:
        called.append(part[0]["index"])
        await asyncio.sleep(0)
        if part[0]["index"] in (2, 4):
            raise RuntimeError(f"chunk {part[0]['index']}")
        return []

    with pytest.raises(RuntimeError, match="chunk 2"):
        await _resolve_all(resolve, persons(12), 2)
    assert 6 not in called and 8 not in called
