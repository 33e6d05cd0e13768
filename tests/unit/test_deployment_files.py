"""Docker is not available here: check the compose files and the Dockerfile by reading them."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from wallet.bench.router import HAPROXY
from wallet.config import Settings, variable_names

ROOT = Path(__file__).resolve().parents[2]
INFRA = {"postgres", "postgres-replica", "rabbitmq", "redis"}
# The variables that point the code at its dependencies and at its port: each must be set.
CONNECTION_VARIABLES = {
    "DATABASE_URL",
    "DATABASE_REPLICA_URLS",
    "REDIS_URL",
    "RABBITMQ_URL",
    "HOST",
    "PORT",
    "RATE_LIMIT_ENABLED",
}


def compose(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def test_compose_has_every_service_with_health_checks():
    services = compose("docker-compose.yml")["services"]
    assert INFRA | {"api", "relay", "worker", "migrate"} <= services.keys()
    for name in INFRA | {"api", "relay", "worker"}:
        assert "healthcheck" in services[name], name
    assert services["postgres"]["image"].startswith("postgres:17")
    assert "management" in services["rabbitmq"]["image"]


def test_api_waits_for_healthy_dependencies_and_migrations():
    api = compose("docker-compose.yml")["services"]["api"]
    depends = api["depends_on"]
    for name in ("postgres-replica", "rabbitmq", "redis"):
        assert depends[name]["condition"] == "service_healthy"
    assert depends["migrate"]["condition"] == "service_completed_successfully"


def test_every_variable_the_code_needs_is_set_and_known():
    services = compose("docker-compose.yml")["services"]
    known = set(Settings.from_env({}).__dataclass_fields__)  # noqa: F841 (documents the source)
    for name in ("api", "relay", "worker", "migrate"):
        env = services[name]["environment"]
        assert env.keys() >= CONNECTION_VARIABLES, (name, CONNECTION_VARIABLES - env.keys())
        assert "replica" in env["DATABASE_REPLICA_URLS"]
        settings = Settings.from_env({k: str(v) for k, v in env.items()})  # parses: no typo'd values
        assert settings.port == 3000
    assert (
        Settings.from_env({k: str(v) for k, v in services["api"]["environment"].items()}).outbox_relay_enabled
        is False
    )


def test_every_variable_in_the_compose_files_is_read_by_the_code():
    source = "\n".join(p.read_text() for p in (ROOT / "wallet").rglob("*.py"))
    source += "".join(f'"{v}"' for v in variable_names().values())  # Settings.from_env derives these
    for file in ("docker-compose.yml", "docker-compose.test.yml"):
        for name, service in compose(file)["services"].items():
            for variable in service.get("environment", {}) or {}:
                if variable.startswith(("POSTGRES_", "PG", "PRIMARY_", "REPLICATION_")):
                    continue  # the images' own settings
                if variable in {"TEST_DATABASE_ADMIN_URL", "SKIP_ENSURE_SERVICES"}:
                    continue  # read by the tests and scripts
                if name == "router":
                    continue  # HAProxy's (test_router_runs_the_shipped_configuration)
                assert f'"{variable}"' in source, (file, name, variable)


def test_test_compose_runs_the_suite_against_the_services():
    tests = compose("docker-compose.test.yml")["services"]["tests"]
    assert "pytest" in " ".join(tests["command"])
    assert {"postgres", "rabbitmq", "redis"} <= tests["depends_on"].keys()


def test_dockerfile_is_multi_stage_slim_non_root_with_healthcheck():
    text = (ROOT / "Dockerfile").read_text()
    assert text.count("\nFROM ") + text.startswith("FROM ") >= 2
    assert "slim" in text
    assert "\nUSER " in text and "USER root" not in text
    assert "HEALTHCHECK" in text
    assert "setup.cfg" in text  # builds the package the tests install


HAPROXY_CFG = ROOT / "deploy" / "haproxy.cfg"
REPLICAS = ("api-1", "api-2")


def test_scale_profile_runs_replicas_like_the_api():
    services = compose("docker-compose.yml")["services"]
    api = services["api"]
    for name in REPLICAS:
        replica = services[name]
        assert replica["profiles"] == ["scale"]
        assert replica["command"] == api["command"] and replica["depends_on"] == api["depends_on"]
        assert "healthcheck" in replica
        settings = Settings.from_env({k: str(v) for k, v in replica["environment"].items()})
        assert settings.outbox_relay_enabled is False  # the relay service publishes
        assert settings.health_required == ("database",)  # Redis/RabbitMQ outages: stay in the router
        assert settings.rate_limit_trust_forwarded is True  # the router sets X-Forwarded-For
        assert settings.port == 3000
    assert {"relay", "worker"} <= services.keys()  # as without the profile


def test_router_runs_the_shipped_configuration():
    services = compose("docker-compose.yml")["services"]
    router = services["router"]
    assert router["profiles"] == ["scale"] and router["image"].startswith("haproxy:")
    assert "./deploy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in router["volumes"]
    env = router["environment"]
    # Every instance the router names is a replica of the profile, on the API's port.
    for k, name in enumerate(REPLICAS, 1):
        assert env[f"WALLET_API_{k}"] == f"{name}:3000"
        assert name in router["depends_on"]
    # The variables set are the ones the configuration reads, and the ports published are its binds.
    read = set(re.findall(r"\$\{(\w+)", HAPROXY_CFG.read_text()))
    assert env.keys() <= read
    published = {p.split(":")[0] for p in router["ports"]}
    assert published == {
        env["WALLET_ROUTER_BIND"].rsplit(":", 1)[1],
        env["WALLET_ROUTER_STATS"].rsplit(":", 1)[1],
    }


def test_router_configuration_hashes_on_the_wallet_and_checks_readiness():
    text = HAPROXY_CFG.read_text()
    assert "balance hash var(txn.wallet)" in text and "hash-type consistent" in text
    assert "path,field(4,/)" in text and "path,field(3,/)" in text  # /v1/wallet/{id}, /wallet/{id}
    assert "http-check send meth GET uri /health/ready" in text


@pytest.mark.skipif(not os.access(HAPROXY, os.X_OK), reason="haproxy not installed (.ci/run installs it)")
def test_router_configuration_is_valid_for_haproxy():
    env = os.environ | {
        "WALLET_API_1": "127.0.0.1:1",
        "WALLET_API_2": "127.0.0.1:2",
        "WALLET_API_3": "127.0.0.1:3",
    }
    result = subprocess.run(
        [HAPROXY, "-c", "-f", str(HAPROXY_CFG)], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
