"""An app under uvicorn in a child process on a loopback port, for tests and benchmarks
that need what only a real process shows (sockets, a service that dies). Every wait is
bounded; `stop` and `kill` end the process by its pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx

from tools.pg import free_port

# How `make run` serves every app (tools/run.py); benchmarks serve them the same way.
FAST = ("--loop", "uvloop", "--http", "httptools")
# The gateway's server protocol relays its most frequent requests itself (gateway/server.py).
GATEWAY_HTTP = "gateway.server:GatewayHttpProtocol"


def serving_args(target: str) -> tuple[str, ...]:
    """uvicorn's options for the app `target` (`module:app`), as `make run` serves it."""
    if target.startswith("gateway."):
        return ("--loop", "uvloop", "--http", GATEWAY_HTTP)
    return FAST


class ServerFailed(RuntimeError):
    pass


class UvicornProcess:
    def __init__(
        self,
        target: str,
        *,
        env: dict[str, str] | None = None,
        port: int | None = None,
        ready_path: str = "/healthz",
        extra_args: tuple[str, ...] = (),
        command: tuple[str, ...] | None = None,
    ) -> None:
        """`command`: a server of another kind to run instead of uvicorn (it is given
        `--port`); `target` then only names it."""
        self.target = target
        self.command = command
        self.port = port or free_port()
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.ready_path = ready_path
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = Path(tempfile.mkstemp(prefix="lianxin-uvicorn-", suffix=".log")[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout_s: float = 60.0) -> UvicornProcess:
        if self.proc is not None and self.proc.poll() is None:
            return self
        with self._log.open("ab") as log:
            command = (
                [*self.command, "--port", str(self.port)]
                if self.command is not None
                else self._uvicorn()
            )
            self.proc = subprocess.Popen(
                command,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_ready(timeout_s)
        return self

    def _uvicorn(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "uvicorn",
            self.target,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--no-access-log",
            "--no-server-header",
            "--log-level",
            "warning",
            "--timeout-graceful-shutdown",
            "2",
            *self.extra_args,
        ]

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=1.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise ServerFailed(f"{self.target} exited:\n{self.log_tail()}")
                try:
                    if client.get(self.url + self.ready_path).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)  # polling a starting process, bounded by the deadline
        self.kill()
        raise ServerFailed(f"{self.target} not ready in {timeout_s} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: the process dies at once, as a crash would."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a bounded wait."""
        self._end(signal.SIGTERM)

    def _end(self, sig: signal.Signals) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self._log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def close(self) -> None:
        self.stop()
        self._log.unlink(missing_ok=True)

    def __enter__(self) -> UvicornProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
