"""Service configuration: command-line flags with environment-variable defaults (``USFAD_*``).

The same variables configure the processes started by hand and by docker-compose.
"""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass, field, fields
from pathlib import Path


@dataclass(frozen=True)
class BatchPolicy:
    """Dynamic batching of one model: at most ``max_batch`` rows/images, wait at most ``max_delay_s``."""

    max_batch: int = 64
    max_delay_s: float = 0.002


@dataclass(frozen=True)
class Settings:
    """Every knob of the API and the workers (flag ``--x-y`` / variable ``USFAD_X_Y``)."""

    model_dir: Path = Path("bundles")
    redis_url: str | None = None  # None: embedded mode (in-process queue and worker)
    queue_prefix: str = "usfad"
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 64
    max_delay_ms: float = 2.0
    batch_policies: dict[str, BatchPolicy] = field(default_factory=dict)
    max_queue_depth: int = 1024
    request_timeout_s: float = 30.0
    result_ttl_s: float = 120.0
    reclaim_idle_s: float = 10.0
    reclaim_interval_s: float = 2.0
    max_deliveries: int = 3
    max_body_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 16_000_000
    max_request_pixels: int = 64_000_000
    max_images: int = 32
    device: str = "auto"
    ort_threads: int = 0
    reload_interval_s: float = 2.0
    heartbeat_interval_s: float = 1.0
    heartbeat_max_age_s: float = 15.0
    metrics_port: int = 9100
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    retry_after_s: int = 1
    api_threads: int = 256
    api_workers: int = 1
    api_token: str | None = field(default=None, repr=False)  # secrets: never in a repr or a log
    metrics_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        """Enforce ``reclaim_idle_s + reclaim_interval_s ≤ request_timeout_s / 2``.

        A job held by a worker that died is taken over once it has been idle ``reclaim_idle_s``
        and a live worker looks (every ``reclaim_interval_s``); at least half of the deadline
        must then be left to compute and answer it, or reclaiming would only ever produce 504s.
        """
        reclaim_by = self.reclaim_idle_s + self.reclaim_interval_s
        if reclaim_by > self.request_timeout_s / 2:
            raise ValueError(
                f"reclaim_idle_s + reclaim_interval_s = {reclaim_by:g} s must be at most half of "
                f"request_timeout_s ({self.request_timeout_s:g} s), so that a dead worker's job is "
                "reclaimed and answered within its deadline"
            )

    def tokens(self) -> tuple[str, ...]:
        """The accepted API bearer tokens (``api_token`` is comma-separated, for rotation)."""
        return _split_tokens(self.api_token)

    def metrics_tokens(self) -> tuple[str, ...]:
        """Tokens accepted on ``/metrics``: ``metrics_token``'s and the API tokens."""
        return _split_tokens(self.metrics_token) + self.tokens()

    def policy(self, model: str) -> BatchPolicy:
        """The batching policy of ``model`` (its override, else the defaults)."""
        return self.batch_policies.get(model, BatchPolicy(self.max_batch, self.max_delay_ms / 1000))


def _split_tokens(value: str | None) -> tuple[str, ...]:
    return tuple(token.strip() for token in (value or "").split(",") if token.strip())


HELP = {
    "model_dir": "directory of model bundles (one sub-directory per model)",
    "redis_url": "Redis URL, e.g. redis://127.0.0.1:6379/0; unset: embedded mode (one process)",
    "queue_prefix": "prefix of every Redis key the service uses",
    "host": "address the HTTP server binds",
    "port": "port of the HTTP server",
    "max_batch": "default max rows/images per batch",
    "max_delay_ms": "default max time the first request of a batch waits for more",
    "batch_policies": "per-model batching MODEL=MAX_BATCH:MAX_DELAY_MS (repeat; comma-separated in the env)",
    "max_queue_depth": "requests queued per model before the API answers 429",
    "request_timeout_s": "deadline of a request; queued work past it is dropped and the client gets 504",
    "result_ttl_s": "lifetime of a result key in Redis",
    "reclaim_idle_s": "entries unacknowledged this long are reclaimed from a dead worker "
    "(reclaim_idle_s + reclaim_interval_s <= request_timeout_s / 2)",
    "reclaim_interval_s": "how often a worker looks for entries to reclaim",
    "max_deliveries": "deliveries after which an entry goes to the dead-letter stream",
    "max_body_bytes": "largest request body accepted (413 beyond)",
    "max_image_pixels": "largest image (width x height) accepted, checked before decoding",
    "max_request_pixels": "most pixels of all images of one request together, checked before decoding",
    "max_images": "most images in one request",
    "device": "auto (CUDA when onnxruntime has it), cpu or cuda",
    "ort_threads": "ONNX Runtime intra-op threads per session (0: its default)",
    "reload_interval_s": "how often the model directory is checked for new or changed bundles",
    "heartbeat_interval_s": "how often a worker announces itself",
    "heartbeat_max_age_s": "a worker silent this long counts as gone for readiness",
    "metrics_port": "worker: port of its Prometheus /metrics (0: none)",
    "worker_id": "worker: consumer name in the Redis consumer group",
    "retry_after_s": "Retry-After seconds sent with 429 and 503",
    "api_threads": "API: threads for blocking work (image decoding, model listing)",
    "api_workers": "API processes (uvicorn workers) sharing the port; needs --redis-url",
    "api_token": "bearer tokens (comma-separated, for rotation) every endpoint but /health/* requires; "
    "unset: no authentication",
    "metrics_token": "bearer tokens also accepted on /metrics (e.g. Prometheus's own); comma-separated",
}


def parse_policies(specs: list[str]) -> dict[str, BatchPolicy]:
    """``["cardio=128:5", …]`` → ``{"cardio": BatchPolicy(128, 0.005)}``; ``ValueError`` names the bad one."""
    policies = {}
    for spec in specs:
        for item in filter(None, (part.strip() for part in spec.split(","))):
            try:
                name, values = item.split("=", 1)
                batch, delay = values.split(":", 1)
                policies[name.strip()] = BatchPolicy(int(batch), float(delay) / 1000)
            except ValueError as error:
                raise ValueError(f"batch policy {item!r} is not MODEL=MAX_BATCH:MAX_DELAY_MS") from error
    return policies


def add_arguments(parser: argparse.ArgumentParser, names: tuple[str, ...] | None = None) -> None:
    """Add a flag per setting (or per setting in ``names``) with ``USFAD_*`` env defaults."""
    defaults = Settings()
    for item in fields(Settings):
        if names is not None and item.name not in names:
            continue
        flag = "--" + item.name.replace("_", "-")
        env = "USFAD_" + item.name.upper()
        default = getattr(defaults, item.name)
        if item.name == "batch_policies":
            raw = os.environ.get(env)
            parser.add_argument(
                flag,
                action="append",
                default=[raw] if raw else [],
                metavar="MODEL=N:MS",
                help=f"{HELP[item.name]} [{env}]",
            )
            continue
        kind = type(default) if default is not None else str
        kind = str if kind is type(Path()) else kind
        value = os.environ.get(env, None if default is None else str(default))
        secret = item.name.endswith("_token")
        parser.add_argument(
            flag,
            type=kind,
            default=kind(value) if value not in (None, "") else None,
            help=f"{HELP[item.name]} [{env}]" + (" (prefer the variable: ps shows flags)" if secret else ""),
        )


def from_args(args: argparse.Namespace) -> Settings:
    """Settings from parsed flags (flags not defined keep their defaults)."""
    values = {}
    for item in fields(Settings):
        if not hasattr(args, item.name):
            continue
        value = getattr(args, item.name)
        if item.name == "batch_policies":
            value = parse_policies(value)
        elif item.name == "model_dir":
            value = Path(value)
        values[item.name] = value
    return Settings(**values)
