"""`GET /api/v1/openapi.json`: every public path of every running service, the gateway's
own routes, unique operationIds, `$ref`s that resolve, the two ways in declared and
applied; and `GET /docs`."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.app import create_app
from gateway.openapi import HTTP_METHODS, iter_refs, merge_documents
from gateway.settings import GatewaySettings
from tests.gateway.conftest import FakeClock, ServiceRouter

INTERNAL = re.compile(r"(/audit-log$|/docs$|/openapi\.json$)")


@pytest.fixture
def gateway_settings(gateway_settings: GatewaySettings) -> GatewaySettings:
    return gateway_settings.model_copy(update={"public_url": "https://lianxin.example.org"})


async def merged(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/api/v1/openapi.json")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    return dict(r.json())


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in HTTP_METHODS
    ]


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


class TestMergedDocument:
    async def test_every_public_path_of_every_running_service(
        self, anon: httpx.AsyncClient, service_apps: dict[str, FastAPI]
    ) -> None:
        doc = await merged(anon)
        checked = 0
        for name, app in service_apps.items():
            own = app.openapi()
            public = [p for p in own["paths"] if not INTERNAL.search(p)]
            checked += len(public)
            for path in public:
                assert path.startswith(f"/api/v1/{name}/"), path
                assert path in doc["paths"], path
                for method in own["paths"][path]:
                    if method in HTTP_METHODS:
                        op = doc["paths"][path][method]
                        assert op["summary"] == own["paths"][path][method]["summary"]
        assert checked, "no service path to check"

    async def test_internal_paths_are_left_out(self, anon: httpx.AsyncClient) -> None:
        doc = await merged(anon)
        for path in doc["paths"]:
            assert not INTERNAL.search(path), path

    async def test_gateway_routes_are_in(self, anon: httpx.AsyncClient) -> None:
        doc = await merged(anon)
        for path in ("/healthz", "/readyz", "/api/v1/auth/token", "/api/v1/audit"):
            assert path in doc["paths"], path
        assert not any(p.startswith("/api/v1/{service}") for p in doc["paths"])

    async def test_operation_ids_are_present_and_unique(self, anon: httpx.AsyncClient) -> None:
        ids = [op.get("operationId") for _, _, op in operations(await merged(anon))]
        assert all(ids), ids
        assert len(ids) == len(set(ids))

    async def test_every_ref_resolves(self, anon: httpx.AsyncClient) -> None:
        doc = await merged(anon)
        refs = set(iter_refs(doc))
        assert refs
        for ref in refs:
            assert resolve(doc, ref) is not None

    async def test_security_schemes_declared_and_applied(self, anon: httpx.AsyncClient) -> None:
        doc = await merged(anon)
        schemes = doc["components"]["securitySchemes"]
        assert schemes["bearerAuth"] == {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": schemes["bearerAuth"]["description"],
        }
        assert schemes["apiKey"]["type"] == "apiKey"
        assert schemes["apiKey"]["in"] == "header"
        assert schemes["apiKey"]["name"] == "X-API-Key"
        used = set()
        for path, _, op in operations(doc):
            for requirement in op.get("security", []):
                used.update(requirement)
            if path.startswith("/api/v1/registry/"):
                assert op["security"] == [{"bearerAuth": []}, {"apiKey": []}], path
        assert used <= set(schemes)

    async def test_info_and_servers(self, anon: httpx.AsyncClient) -> None:
        doc = await merged(anon)
        assert doc["openapi"].startswith("3.1")
        assert doc["info"]["title"] == "Lianxin API"
        assert doc["info"]["version"]
        assert doc["servers"][0]["url"] == "https://lianxin.example.org"

    async def test_a_service_that_is_down_is_left_out(
        self,
        gateway_settings: GatewaySettings,
        db: async_sessionmaker[AsyncSession],
        upstream: ServiceRouter,
        clock: FakeClock,
    ) -> None:
        down = gateway_settings.model_copy(update={"registry_url": "http://stopped-service"})
        app = create_app(down, transport=upstream, sessionmaker=db, clock=clock)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://gateway"
            ) as client,
        ):
            doc = await merged(client)
        assert not any(p.startswith("/api/v1/registry/") for p in doc["paths"])
        assert "/api/v1/auth/token" in doc["paths"]

    async def test_service_documents_are_cached(
        self, anon: httpx.AsyncClient, upstream: ServiceRouter
    ) -> None:
        await merged(anon)
        fetched = len(upstream.calls)
        await merged(anon)
        assert len(upstream.calls) == fetched


class TestDocs:
    async def test_swagger_ui_points_at_the_merged_document(self, anon: httpx.AsyncClient) -> None:
        r = await anon.get("/docs")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/html")
        assert "/api/v1/openapi.json" in r.text
        policy = dict(
            part.strip().split(" ", 1) for part in r.headers["content-security-policy"].split(";")
        )
        assert "'unsafe-inline'" not in policy["script-src"]
        assert "'sha256-" in policy["script-src"]
        assert policy["connect-src"] == "'self' https://lianxin.example.org"
        assert policy["frame-ancestors"] == "'none'"


def schema(title: str, **props: Any) -> dict[str, Any]:
    return {"title": title, "type": "object", "properties": props}


def service_doc(name: str, schemas: dict[str, Any], op_id: str, ref: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "paths": {
            f"/api/v1/{name}/things": {
                "get": {
                    "operationId": op_id,
                    "summary": "Things",
                    "security": [{"HTTPBearer": []}],
                    "responses": {
                        "200": {
                            "description": "ok",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": f"#/components/schemas/{ref}"}
                                }
                            },
                        }
                    },
                }
            },
            f"/api/v1/{name}/audit-log": {"get": {"operationId": f"{name}Audit"}},
            "/healthz": {"get": {"operationId": f"{name}Health"}},
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"HTTPBearer": {"type": "http", "scheme": "bearer"}},
        },
    }


class TestMerge:
    def merge(self, *docs: tuple[str, dict[str, Any]]) -> dict[str, Any]:
        return merge_documents(
            {"openapi": "3.1.0", "paths": {}},
            dict(docs),
            title="t",
            version="1",
            description="d",
            servers=[{"url": "/"}],
        )

    def test_identical_schemas_are_shared(self) -> None:
        problem = schema("Problem", status={"type": "integer"})
        doc = self.merge(
            ("alpha", service_doc("alpha", {"Problem": problem}, "listThings", "Problem")),
            ("beta", service_doc("beta", {"Problem": problem}, "listOtherThings", "Problem")),
        )
        assert list(doc["components"]["schemas"]) == ["Problem"]

    def test_clashing_schemas_are_namespaced_and_refs_follow(self) -> None:
        a = {
            "Item": schema("Item", name={"type": "string"}),
            "Page": schema("Page", items={"$ref": "#/components/schemas/Item"}),
        }
        b = {
            "Item": schema("Item", hours={"type": "number"}),
            # Same text as alpha's Page, but its Item is another one: it must move too.
            "Page": schema("Page", items={"$ref": "#/components/schemas/Item"}),
        }
        doc = self.merge(
            ("alpha", service_doc("alpha", a, "listThings", "Page")),
            ("beta", service_doc("beta", b, "listThings", "Page")),
        )
        schemas = doc["components"]["schemas"]
        # (`Problem`: the gateway's own 400 for a token and a key together, on every
        # proxied operation.)
        assert set(schemas) == {"Item", "Page", "BetaItem", "BetaPage", "Problem", "FieldError"}
        assert schemas["BetaPage"]["properties"]["items"] == {
            "$ref": "#/components/schemas/BetaItem"
        }
        beta_op = doc["paths"]["/api/v1/beta/things"]["get"]
        beta_ref = beta_op["responses"]["200"]["content"]["application/json"]["schema"]
        assert beta_ref == {"$ref": "#/components/schemas/BetaPage"}
        alpha_op = doc["paths"]["/api/v1/alpha/things"]["get"]
        alpha_ref = alpha_op["responses"]["200"]["content"]["application/json"]["schema"]
        assert alpha_ref == {"$ref": "#/components/schemas/Page"}
        # operationIds made unique, internal and foreign paths dropped, security mapped.
        assert alpha_op["operationId"] == "listThings"
        assert beta_op["operationId"] == "betaListThings"
        assert set(doc["paths"]) == {"/api/v1/alpha/things", "/api/v1/beta/things"}
        assert beta_op["security"] == [{"bearerAuth": []}, {"apiKey": []}]
        assert beta_op["responses"]["400"]["content"]["application/problem+json"] == {
            "schema": {"$ref": "#/components/schemas/Problem"}
        }
        for ref in iter_refs(doc):
            assert resolve(doc, ref) is not None
