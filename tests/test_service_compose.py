"""docker-compose.yml, docker-compose.gpu.yml and docker/: valid against the compose-spec schema, wired right.

``docker/compose-spec.json`` is the compose-spec schema (taken from Debian's docker-compose
1.29.2 package). The processes the file describes are started without Docker, with the same
commands and variables, in tests/test_service_e2e.py; the real images and containers are built
and run in tests/test_deploy_stack.py.
"""

from __future__ import annotations

import copy
import json
import tomllib
from dataclasses import fields

import jsonschema
import pytest
import yaml

from service.__main__ import build_parser
from service.settings import Settings
from tests.service_support import REPO_ROOT

pytestmark = pytest.mark.timeout(60)
COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
GPU_OVERLAY = yaml.safe_load((REPO_ROOT / "docker-compose.gpu.yml").read_text())
SCHEMA = json.loads((REPO_ROOT / "docker" / "compose-spec.json").read_text())
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def merge(base: dict, overlay: dict) -> dict:
    """Compose's merge of ``-f base -f overlay`` for mappings (the overlay holds no lists)."""
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def test_compose_file_and_gpu_overlay_are_valid_against_the_compose_spec() -> None:
    jsonschema.validate(COMPOSE, SCHEMA)
    jsonschema.validate(GPU_OVERLAY, SCHEMA)
    jsonschema.validate(merge(COMPOSE, GPU_OVERLAY), SCHEMA)


@pytest.mark.parametrize(
    "breakage",
    [
        lambda c: c["services"]["api"].update(helthcheck={}),
        lambda c: c["services"]["worker"].update(deploy={"resources": {"reservations": "gpu"}}),
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


def test_default_stack_needs_no_gpu_and_the_overlay_reserves_one() -> None:
    assert not any("deploy" in service for service in COMPOSE["services"].values())  # runs anywhere
    cpu_worker = COMPOSE["services"]["worker"]
    assert "container_name" not in cpu_worker and "ports" not in cpu_worker  # replicas would clash
    assert set(GPU_OVERLAY["services"]) == {"worker"}
    gpu_worker = merge(COMPOSE, GPU_OVERLAY)["services"]["worker"]
    (device,) = gpu_worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"] and device["driver"] == "nvidia"
    assert gpu_worker["image"] != cpu_worker["image"]  # the two variants never overwrite each other
    assert gpu_worker["environment"]["USFAD_DEVICE"] == "auto"


def test_onnxruntime_build_args_are_the_project_extras() -> None:
    """CPU worker: the `cpu` extra's onnxruntime; GPU overlay: the `gpu` extra's onnxruntime-gpu."""
    cpu_arg = COMPOSE["services"]["worker"]["build"]["args"]["ONNXRUNTIME"]
    gpu_arg = GPU_OVERLAY["services"]["worker"]["build"]["args"]["ONNXRUNTIME"]
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert cpu_arg in extras["cpu"] and cpu_arg.startswith("onnxruntime==")
    assert gpu_arg in extras["gpu"] and gpu_arg.startswith("onnxruntime-gpu[")
    dockerfile = (REPO_ROOT / "docker" / "worker.Dockerfile").read_text()
    assert f'ARG ONNXRUNTIME="{cpu_arg}"' in dockerfile


@pytest.mark.parametrize("image", ["api", "worker"])
def test_images_take_their_base_from_a_build_argument_defaulting_to_official_python(image: str) -> None:
    lines = (REPO_ROOT / "docker" / f"{image}.Dockerfile").read_text().splitlines()
    code = [line for line in lines if line and not line.startswith("#")]
    assert code[:2] == ["ARG BASE_IMAGE=python:3.11-slim", "FROM ${BASE_IMAGE}"]
    build_args = COMPOSE["services"][image]["build"]["args"]
    assert build_args["BASE_IMAGE"] == "${USFAD_BASE_IMAGE:-python:3.11-slim}"


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
    assert "orjson" in requirements  # service/queue/codec.py needs it in both images
    assert not {"torch", "torchvision", "anomalib", "timm"} & set(requirements)
    instructions = "\n".join(line for line in dockerfile.splitlines() if not line.startswith("#"))
    assert ("onnxruntime" in instructions) == (image == "worker")


def test_build_context_holds_only_what_the_dockerfiles_copy() -> None:
    """CI's clone holds a .venv of several GB: the build context must leave it out."""
    rules = [
        line for line in (REPO_ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"
    ]
    assert rules[0] == "*"
    admitted = {rule[1:] for rule in rules if rule.startswith("!")}
    copied = {
        line.split()[1]
        for image in ("api", "worker")
        for line in (REPO_ROOT / "docker" / f"{image}.Dockerfile").read_text().splitlines()
        if line.startswith("COPY ")
    }
    assert admitted == copied
