"""`python -m tools.serve <app>` (the image's entrypoint): the same apps and ports as
`make run`, a probe for healthchecks, and `migrate`."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tools import run, serve


def test_the_same_apps_and_ports_as_make_run() -> None:
    for name, module, port in run.APPS:
        assert serve.APPS[name][0] == module
        assert serve.settings_class(name).model_fields["port"].default == port
    assert set(serve.APPS) == {name for name, _, _ in run.APPS}


class _Ready(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/readyz" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def ready_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ready)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join()


def test_probe(ready_server: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIANXIN_PORT", str(ready_server))
    assert serve.main(["registry", "--probe", "readyz"]) == 0
    assert serve.main(["registry", "--probe", "healthz"]) == 1  # answers 503 there


def test_probe_of_a_stopped_app_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("LIANXIN_PORT", str(port))
    assert serve.main(["gateway", "--probe", "readyz"]) == 1


def test_unknown_app_is_refused() -> None:
    with pytest.raises(SystemExit):
        serve.main(["nothing"])


def test_migrate_needs_a_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("LIANXIN_DATABASE_URL", raising=False)
    with pytest.raises(SystemExit):
        serve.main(["migrate"])


def test_migrate_applies_every_history(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert serve.main(["migrate"]) == 0  # already at head: a no-op, and says so
    assert "migrations applied: registry" in capsys.readouterr().out


def test_an_app_refuses_bad_production_settings_before_binding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LIANXIN_ENVIRONMENT", "production")
    with pytest.raises(ValueError, match="production mode refuses"):
        serve.main(["registry"])
