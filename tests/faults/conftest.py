"""The fault tests run whole systems as processes (tests/contract/system.py), some on a
PostgreSQL server of their own that they stop and start again."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.helpers import Server
from tools import pg


@pytest.fixture(scope="module")
def own_server() -> Iterator[Server]:
    """A dedicated embedded PostgreSQL (the suite's server is never restarted)."""
    data_dir = Path(tempfile.mkdtemp(prefix="lianxin-faults-pg-"))
    port = pg.free_port()
    pg.start(data_dir, port)
    try:
        yield Server(data_dir, port)
    finally:
        pg.destroy(data_dir)
