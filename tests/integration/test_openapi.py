"""The OpenAPI document: valid, complete (every route of the app), served with Swagger UI; and a
short schemathesis run against the live app, with every check, finds nothing."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from openapi_spec_validator import validate

from tests.integration.edges import serving
from wallet.auth.issue import issue_key
from wallet.http.openapi import SPEC_URL, UI_PATH
from wallet.persistence.api_key_store import ApiKeyStore

ROOT = str(Path(__file__).resolve().parents[2])
HOOKS = "tests.integration.schemathesis_hooks"


async def _document(client) -> dict[str, Any]:
    response = await client.get(SPEC_URL)
    assert response.status == 200
    document: dict[str, Any] = await response.json()
    return document


async def test_the_document_is_valid_and_covers_every_route(settings):
    async with serving(settings) as (_, client):
        document = await _document(client)
        validate(document)  # raises on any violation of the OpenAPI (2.0) specification
        paths = document["paths"]
        for route in client.app.router.routes():
            info = route.resource.get_info() if route.resource is not None else {}
            path = info.get("path") or info.get("formatter")
            if route.method in ("HEAD", "*") or path is None or path.startswith(UI_PATH):
                continue
            assert route.method.lower() in paths.get(path, {}), f"{route.method} {path} undocumented"

        for prefix in ("/v1", ""):
            deposit = paths[f"{prefix}/wallet/{{id}}/deposit"]["post"]
            body = [p for p in deposit["parameters"] if p["in"] == "body"]
            assert body and body[0]["schema"] == {"$ref": "#/definitions/DepositRequest"}
            assert deposit["responses"]["200"]["schema"] == {"$ref": "#/definitions/BalanceResponse"}
            for code in ("400", "422", "429", "500", "503"):
                assert deposit["responses"][code]["schema"] == {"$ref": "#/definitions/ErrorResponse"}
            path_id = next(p for p in deposit["parameters"] if p["in"] == "path")
            assert path_id["pattern"] == "^[A-Za-z0-9_.:-]{1,64}$"
            history = paths[f"{prefix}/wallet/{{id}}/history"]["get"]
            assert {p["name"] for p in history["parameters"] if p["in"] == "query"} == {"limit", "offset"}
            assert history["responses"]["200"]["schema"]["type"] == "array"
        definitions = document["definitions"]
        assert definitions["DepositRequest"]["additionalProperties"] is False
        assert definitions["ErrorResponse"]["required"] == sorted(
            ["statusCode", "error", "message", "timestamp", "path", "requestId"]
        )
        assert paths["/health/ready"]["get"]["responses"]["503"]["schema"] == {
            "$ref": "#/definitions/HealthResponse"
        }
        # Text, or the JSON error body when the credential is refused.
        assert paths["/metrics"]["get"]["produces"] == ["text/plain", "application/json"]
        # Security (Swagger UI's Authorize button): a bearer credential everywhere but the open routes.
        assert document["securityDefinitions"]["bearer"]["name"] == "Authorization"
        assert document["security"] == [{"bearer": []}]
        assert paths["/health/live"]["get"]["security"] == [] == paths["/health/ready"]["get"]["security"]
        assert "security" not in paths["/health"]["get"] and "401" in paths["/health"]["get"]["responses"]
        for code in ("401", "403"):
            assert paths["/v1/wallet/{id}/deposit"]["post"]["responses"][code]["schema"] == {
                "$ref": "#/definitions/ErrorResponse"
            }


async def test_swagger_ui_is_served_beside_the_document(settings):
    async with serving(settings) as (_, client):
        page = await client.get(UI_PATH)
        html = await page.text()
        assert page.status == 200 and "swagger-ui" in html.lower()
        assert SPEC_URL in html
        assert (await client.get("/api/static/swagger-ui-bundle.js")).status == 200


async def test_two_apps_document_the_same(settings):
    async with serving(settings, "doc-1") as (_, one), serving(settings, "doc-2") as (_, two):
        assert await _document(one) == await _document(two)


# Every status a schema-valid request may get: a valid body may still break a business rule (422:
# insufficient funds, X-Request-ID reused, ...), name an unknown wallet (404), be rate limited.
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]
"""


async def test_schemathesis_covers_every_operation_with_every_check(settings, tmp_path):
    """The schemathesis CLI as a user runs it: every phase that needs no links (examples,
    coverage, fuzzing), every check (``--checks all``): no 5xx, no undocumented status or header,
    no schema-violating request accepted, no schema-valid one refused. Authentication is on: it
    sends an API key with every scope, and its auth checks find every secured operation refused
    without it or with a made-up one."""
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    settings = replace(settings, auth_enabled=True, auth_failure_rate_limit="1000000/minute")
    async with serving(settings, "fuzz") as (service, client):
        _, token = await issue_key(ApiKeyStore(service.pool), "schemathesis", ["*"], ["*"])
        base_url = str(client.make_url("")).rstrip("/")
        document = await _document(client)
        operations = sum(len(item) for item in document["paths"].values())
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "schemathesis.cli", "run", base_url + SPEC_URL),
            *("--checks", "all", "--phases", "examples,coverage,fuzzing", "--max-examples", "5"),
            *("--workers", "1", "--suppress-health-check", "all", "--generation-deterministic"),
            *("--request-timeout", "10", "--no-color"),
            *("--header", f"Authorization: Bearer {token}"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,  # its schemathesis.toml
            env={
                **os.environ,
                "SCHEMATHESIS_HOOKS": "tests.integration.schemathesis_hooks",
                "PYTHONPATH": ROOT,
            },
        )
        output = (await process.communicate())[0].decode()
        assert process.returncode == 0, output[-15000:]
        assert f"Tested: {operations}" in output, output[-3000:]
        assert time.monotonic() - started < 90
