"""The CPU scheduling policy Lianxin's server processes run under: `SCHED_BATCH` (Linux).

A read of a member card through the gateway passes four processes — the client, the gateway,
the service, PostgreSQL — and each hop's `send` wakes the next process. Under the default
policy a woken process preempts the one that woke it when they share a core: on a small
machine, a switch per hop, the waker's loop turn cut short and both processes' caches cold
again. Under `SCHED_BATCH` a woken process does not preempt; it runs when the core's current
process blocks (an event loop waiting for its sockets: within a turn) or at the scheduler's
tick. Each loop turn then handles what has gathered since the last one — several requests
and answers per wake-up instead of one. On a 2-core machine, in alternating turns, the
member read straight to the registry took 11–20% more requests/s and through the gateway
23–32% more, with less CPU per read in every process (the README's Performance section).

Nothing else changes: the processes' share of the CPU (`nice`) stays the same, and a process
that has a core to itself runs as soon as it is woken. What it can cost: a process woken
while every core runs a long loop turn waits for one of them to end — a work-unit sync
(large chunks passed between mobility, the registry and PostgreSQL) took up to a fifth
longer when the machine was slow, the same within the noise when it was fast.

An unprivileged process may choose this policy for itself (no capability, no container
option needed). The apps take it when they start (`common.app.settle_process`, setting
`LIANXIN_CPU_BATCH`, default on); `make run`'s embedded PostgreSQL too (`tools.pg`), its
backends inheriting it from the postmaster. Elsewhere (another operating system, a policy
the kernel refuses) the process runs as it was started."""

from __future__ import annotations

import contextlib
import logging
import os

import psutil
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger("lianxin.scheduling")


class ProcessSettings(BaseSettings):
    """How a Lianxin process runs, for the processes that have no app settings (the embedded
    PostgreSQL's launcher); the apps read the same variables through `BaseAppSettings`."""

    model_config = SettingsConfigDict(env_prefix="LIANXIN_", extra="ignore")

    cpu_batch: bool = True


def apply_cpu_policy(
    pid: int = 0, *, settings: ProcessSettings | None = None, children: bool = False
) -> bool:
    """Puts process `pid` (0: this one), and with `children` the processes it has started,
    under `SCHED_BATCH` unless `cpu_batch` is off (`settings`, else the environment's):
    whether it is (False where the platform has no such policy or the kernel refuses;
    nothing is raised, the process runs on as before)."""
    if not (settings or ProcessSettings()).cpu_batch:
        return False
    policy = getattr(os, "SCHED_BATCH", None)
    if policy is None:
        return False
    pids = [pid]
    if children:
        with contextlib.suppress(psutil.Error):
            pids += [c.pid for c in psutil.Process(pid or os.getpid()).children(recursive=True)]
    done = False
    for one in pids:
        try:
            os.sched_setscheduler(one, policy, os.sched_param(0))
        except OSError as exc:  # gone, or not ours to change
            log.debug("SCHED_BATCH not set for pid %s: %s", one, exc)
            continue
        done = done or one == pid
    return done
