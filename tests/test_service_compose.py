"""docker-compose.yml and docker/: valid against the compose-spec JSON schema, and wired right.

There is no Docker engine here; ``docker/compose-spec.json`` is the compose-spec schema
(taken from Debian's docker-compose 1.29.2 package). The processes the file describes are
started without Docker, with the same commands and variables, in tests/test_service_e2e.py.
"""

from __future__ import annotations

import copy
import json
from dataclasses import fields

import jsonschema
import pytest
import yaml

from service.__main__ import build_parser
from service.settings import Settings
from tests.service_support import REPO_ROOT

pytestmark = pytest.mark.timeout(60)
COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
SCHEMA = json.loads((REPO_ROOT / "docker" / "compose-spec.json").read_text())


def test_compose_file_is_valid_against_the_compose_spec() -> None:
    jsonschema.validate(COMPOSE, SCHEMA)


@pytest.mark.parametrize(
    "breakage",
    [
        lambda c: c["services"]["api"].update(helthcheck={}),
        lambda c: c["services"]["worker"]["deploy"]["resources"].update(reservations="gpu"),
        lambda c: c["services"]["redis"].update(ports="6379"),
    ],
)
def test_the_schema_check_catches_mistakes(breakage) -> None:
    broken = copy.deepcopy(COMPOSE)
    breakage(broken)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)


def test_every_service_has_a_health_check_and_redis_keeps_an_append_only_file() -> None:
    services = COMPOSE["services"]
    assert set(services) == {"redis", "api", "worker", "prometheus"}
    assert all("healthcheck" in service for service in services.values())
    assert "--appendonly" in services["redis"]["command"] and "yes" in services["redis"]["command"]


def test_worker_reserves_a_gpu_and_can_be_scaled() -> None:
    worker = COMPOSE["services"]["worker"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"] and device["driver"] == "nvidia"
    assert "container_name" not in worker and "ports" not in worker  # replicas would clash
    assert "onnxruntime-gpu" in worker["build"]["args"]["ONNXRUNTIME"]


def test_api_and_workers_mount_the_model_directory_they_are_configured_with() -> None:
    for name in ("api", "worker"):
        service = COMPOSE["services"][name]
        targets = [volume.rsplit(":", 2)[1] for volume in service["volumes"]]
        assert service["environment"]["USFAD_MODEL_DIR"] in targets
        assert service["environment"]["USFAD_REDIS_URL"].startswith("redis://redis:")
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"


def test_compose_commands_and_variables_are_the_service_cli() -> None:
    known = {"USFAD_" + item.name.upper() for item in fields(Settings)}
    parser = build_parser()
    for name in ("api", "worker"):
        service = COMPOSE["services"][name]
        assert service["command"][:3] == ["python", "-m", "service"]
        parser.parse_args(service["command"][3:])  # a sub-command the CLI knows
        unknown = set(service["environment"]) - known
        assert not unknown, f"{name}: variables the service does not read: {unknown}"


def test_prometheus_scrapes_the_api_and_every_worker_replica() -> None:
    config = yaml.safe_load((REPO_ROOT / "docker" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["usfad-api"]["static_configs"][0]["targets"] == ["api:8000"]
    (discovery,) = jobs["usfad-worker"]["dns_sd_configs"]
    port = COMPOSE["services"]["worker"]["environment"]["USFAD_METRICS_PORT"]
    assert discovery["names"] == ["worker"] and str(discovery["port"]) == port
    mounted = COMPOSE["services"]["prometheus"]["volumes"][0]
    assert mounted.startswith("./docker/prometheus.yml:")


@pytest.mark.parametrize("image", ["api", "worker"])
def test_images_hold_only_the_service_and_never_torch(image: str) -> None:
    dockerfile = (REPO_ROOT / "docker" / f"{image}.Dockerfile").read_text()
    requirements = [
        line.split("==")[0].lower()
        for line in (REPO_ROOT / "docker" / f"requirements-{image}.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    copies = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")]
    assert copies == [f"docker/requirements-{image}.txt", "service/"]
    assert not {"torch", "torchvision", "anomalib", "timm"} & set(requirements)
    instructions = "\n".join(line for line in dockerfile.splitlines() if not line.startswith("#"))
    assert ("onnxruntime" in instructions) == (image == "worker")
