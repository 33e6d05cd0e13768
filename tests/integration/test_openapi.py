"""The OpenAPI document: valid, complete (every route of the app), served with Swagger UI; and a
short schemathesis run against the live app finds no server error and no response that breaks
the documented schema."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import Any

import aiohttp
from openapi_spec_validator import validate

from tests.integration.edges import serving
from wallet.http.openapi import SPEC_URL, UI_PATH

EXAMPLES_PER_OPERATION = {"positive": 12, "negative": 4}


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
        assert paths["/metrics"]["get"]["produces"] == ["text/plain"]


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


def _run_schemathesis(document: dict[str, Any], base_url: str) -> tuple[Counter[str], list[str]]:
    import schemathesis

    schema = schemathesis.openapi.from_dict(document)
    statuses: Counter[str] = Counter()
    failures: list[str] = []
    for result in schema.get_all_operations():
        for mode, examples in EXAMPLES_PER_OPERATION.items():
            _fuzz(result.ok(), mode, examples, base_url, statuses, failures)
    return statuses, failures


def _fuzz(
    operation: Any, mode: str, examples: int, base_url: str, statuses: Counter[str], failures: list[str]
) -> None:
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, content_type_conformance]
    checks.append(response_schema_conformance)

    @given(case=operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode)))
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    def run(case: Any) -> None:
        response = case.call(base_url=base_url, timeout=10)
        statuses[f"{response.status_code // 100}xx"] += 1
        try:
            case.validate_response(response, checks=checks)
        except Exception as exc:
            where = f"{operation.method.upper()} {operation.path}"
            failures.append(f"{where} -> {response.status_code}: {exc}")

    with contextlib.suppress(Unsatisfiable):  # no invalid input exists (no parameters)
        run()


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(settings):
    async with serving(settings, "fuzz") as (_, client):
        base_url = str(client.make_url("")).rstrip("/")
        async with aiohttp.ClientSession() as session, session.get(base_url + SPEC_URL) as response:
            document = await response.json()
        started = time.monotonic()
        statuses, failures = await asyncio.get_running_loop().run_in_executor(
            None, _run_schemathesis, document, base_url
        )
        assert not failures, "\n".join(failures[:20])
        assert statuses["5xx"] == 0
        assert statuses["2xx"] > 50 and statuses["4xx"] > 50, statuses  # both paths were exercised
        assert time.monotonic() - started < 60
