"""The CPU policy of Lianxin's servers (`common/scheduling.py`): a served app and the
embedded PostgreSQL (its backends included) run under `SCHED_BATCH`; `LIANXIN_CPU_BATCH=false`
leaves a process as it was started; a test process's apps leave it alone."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.db import plain_url
from common.scheduling import ProcessSettings, apply_cpu_policy
from services.registry.app import create_app
from services.registry.settings import RegistrySettings
from tests.gateway.live import registry_service
from tests.helpers import PUBLIC_PEM
from tools import pg

BATCH = os.SCHED_BATCH
OTHER = os.SCHED_OTHER


@pytest.fixture
def normal_policy(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process under the default policy while a test starts children from it (they
    inherit it), as it was afterwards; `LIANXIN_CPU_BATCH` unset (its default), whatever
    the environment the tests run in says."""
    monkeypatch.delenv("LIANXIN_CPU_BATCH", raising=False)
    before = os.sched_getscheduler(0)
    os.sched_setscheduler(0, OTHER, os.sched_param(0))
    yield
    os.sched_setscheduler(0, before, os.sched_param(0))


@pytest.fixture
def sleeper() -> Iterator[tuple[int, int]]:
    """A process that has started a child of its own: their pids."""
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", code], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    try:
        yield proc.pid, child
    finally:
        os.kill(child, signal.SIGKILL)
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()


@pytest.mark.usefixtures("normal_policy")
def test_a_served_app_runs_under_sched_batch(database_url: str) -> None:
    with registry_service(database_url, PUBLIC_PEM) as process:
        assert os.sched_getscheduler(process.pid) == BATCH
        # Still served: the policy changes when a process waits, not what it answers.
        assert httpx.get(process.url + "/healthz", trust_env=False).status_code == 200


@pytest.mark.usefixtures("normal_policy")
def test_cpu_batch_off_leaves_a_served_app_as_started(database_url: str) -> None:
    with registry_service(database_url, PUBLIC_PEM, LIANXIN_CPU_BATCH="false") as process:
        assert os.sched_getscheduler(process.pid) == OTHER


async def test_an_app_in_a_test_process_leaves_the_process_alone(
    normal_policy: None, db: async_sessionmaker[AsyncSession], settings_env: dict[str, object]
) -> None:
    # Not `serving`: one of the many apps a test process makes (its policy: on).
    settings = RegistrySettings(**settings_env)  # type: ignore[arg-type]
    assert settings.cpu_batch
    app = create_app(settings, sessionmaker=db)
    async with app.router.lifespan_context(app):
        assert os.sched_getscheduler(0) == OTHER


def test_the_embedded_postgresql_and_its_new_backends_run_under_sched_batch(
    normal_policy: None,
) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="lianxin-test-sched-pg-"))
    try:
        cluster = pg.start(data_dir)
        assert cluster.pid is not None
        assert os.sched_getscheduler(cluster.pid) == BATCH
        workers = psutil.Process(cluster.pid).children()  # started before: set with it
        assert workers
        assert {os.sched_getscheduler(w.pid) for w in workers} == {BATCH}

        async def backend_pid() -> int:
            conn = await asyncpg.connect(plain_url(cluster.url))
            try:
                pid: int = await conn.fetchval("SELECT pg_backend_pid()")
                assert os.sched_getscheduler(pid) == BATCH  # forked after: inherited
                return pid
            finally:
                await conn.close()

        assert asyncio.run(backend_pid()) != cluster.pid
    finally:
        pg.destroy(data_dir)


def test_apply_cpu_policy_takes_a_process_and_its_children(
    normal_policy: None, sleeper: tuple[int, int]
) -> None:
    parent, child = sleeper
    assert (os.sched_getscheduler(parent), os.sched_getscheduler(child)) == (OTHER, OTHER)
    assert apply_cpu_policy(parent, children=True) is True
    assert (os.sched_getscheduler(parent), os.sched_getscheduler(child)) == (BATCH, BATCH)


def test_apply_cpu_policy_off_or_on_a_gone_process_changes_nothing(
    normal_policy: None, sleeper: tuple[int, int]
) -> None:
    parent, _ = sleeper
    off = ProcessSettings(cpu_batch=False)
    assert apply_cpu_policy(parent, settings=off, children=True) is False
    assert os.sched_getscheduler(parent) == OTHER
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=30)
    assert apply_cpu_policy(gone.pid) is False  # no such process: nothing raised


def test_a_setting_that_is_not_a_boolean_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIANXIN_CPU_BATCH", "sometimes")
    with pytest.raises(ValidationError, match="cpu_batch"):
        ProcessSettings()
