"""Docker is not available here: check the compose files and the Dockerfile by reading them."""

from __future__ import annotations

from pathlib import Path

import yaml

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
