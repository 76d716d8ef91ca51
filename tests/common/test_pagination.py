from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import pytest

from common.errors import Unprocessable
from common.pagination import decode_cursor, encode_cursor, page_of


class TestCursor:
    def test_round_trips_typed_keys(self) -> None:
        key = [uuid.uuid4(), datetime(2026, 1, 2, 3, 4, tzinfo=UTC), date(2003, 5, 6), "1.2", 7]
        cursor = encode_cursor(key, {"status": "active"})
        assert decode_cursor(cursor, {"status": "active"}) == key

    def test_bound_to_filters(self) -> None:
        cursor = encode_cursor(["a"], {"status": "active"})
        with pytest.raises(Unprocessable):
            decode_cursor(cursor, {"status": "mobile"})

    def test_none_filters_do_not_count(self) -> None:
        cursor = encode_cursor(["a"], {"status": None})
        assert decode_cursor(cursor, {}) == ["a"]

    @pytest.mark.parametrize("garbage", ["!!!", "bm90IGpzb24", "e30", "W10"])
    def test_garbage_is_422(self, garbage: str) -> None:
        with pytest.raises(Unprocessable):
            decode_cursor(garbage, {})


class TestPageOf:
    def test_cuts_and_points_at_last_item(self) -> None:
        items, cursor = page_of([1, 2, 3], limit=2, key=lambda i: [i], filters={})
        assert items == [1, 2]
        assert decode_cursor(cursor, {}) == [2]

    def test_last_page_has_no_cursor(self) -> None:
        assert page_of([1, 2], limit=2, key=lambda i: [i], filters={}) == ([1, 2], None)
