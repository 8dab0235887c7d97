"""Service configuration: command-line flags with environment-variable defaults (``USFAD_*``).

The same variables configure the processes started by hand and by docker-compose.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class BatchPolicy:
    """Dynamic batching of one model: at most ``max_batch`` rows/images, wait at most ``max_delay_s``."""

    max_batch: int = 64
    max_delay_s: float = 0.002


API, WORKER, BOTH = "api", "worker", "both"  # which processes read a setting


def setting(
    default: Any, help: str, role: str = BOTH, factory: Callable[[], Any] | None = None, **options: Any
) -> Any:
    """A ``Settings`` field with its help text and role (``api``, ``worker``, ``both``) as metadata.

    This is the one place a setting is described: the flags of ``python -m service serve`` /
    ``worker`` and of ``usfad serve`` / ``worker`` and their ``--help`` come from it.
    """
    metadata = {"help": help, "role": role}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata, **options)
    return field(default=default, metadata=metadata, **options)


@dataclass(frozen=True)
class Settings:
    """Every knob of the API and the workers (flag ``--x-y`` / variable ``USFAD_X_Y``)."""

    model_dir: Path = setting(
        Path("bundles"),
        "directory of model bundles (one sub-directory per model)",
        BOTH,
    )
    # None: embedded mode (in-process queue and worker)
    redis_url: str | None = setting(
        None,
        "Redis URL, e.g. redis://127.0.0.1:6379/0; unset: embedded mode (one process)",
        BOTH,
    )
    queue_prefix: str = setting("usfad", "prefix of every Redis key the service uses", BOTH)
    host: str = setting("127.0.0.1", "address the HTTP server binds", API)
    port: int = setting(8000, "port of the HTTP server", API)
    max_batch: int = setting(64, "default max rows/images per batch", BOTH)
    max_delay_ms: float = setting(2.0, "default max time the first request of a batch waits for more", BOTH)
    batch_policies: dict[str, BatchPolicy] = setting(
        None,
        "per-model batching MODEL=MAX_BATCH:MAX_DELAY_MS (repeat; comma-separated in the env)",
        BOTH,
        factory=dict,
    )
    max_queue_depth: int = setting(1024, "requests queued per model before the API answers 429", API)
    request_timeout_s: float = setting(
        30.0,
        "deadline of a request; queued work past it is dropped and the client gets 504",
        BOTH,
    )
    result_ttl_s: float = setting(120.0, "lifetime of a result key in Redis", BOTH)
    reclaim_idle_s: float = setting(
        10.0,
        "entries unacknowledged this long are reclaimed from a dead worker (reclaim_idle_s + "
        "reclaim_interval_s <= request_timeout_s / 2)",
        BOTH,
    )
    reclaim_interval_s: float = setting(2.0, "how often a worker looks for entries to reclaim", BOTH)
    max_deliveries: int = setting(3, "deliveries after which an entry goes to the dead-letter stream", BOTH)
    max_body_bytes: int = setting(20 * 1024 * 1024, "largest request body accepted (413 beyond)", API)
    max_image_pixels: int = setting(
        16_000_000,
        "largest image (width x height) accepted, checked before decoding",
        API,
    )
    max_request_pixels: int = setting(
        64_000_000,
        "most pixels of all images of one request together, checked before decoding",
        API,
    )
    max_images: int = setting(32, "most images in one request", API)
    device: str = setting("auto", "auto (CUDA when onnxruntime has it), cpu or cuda", BOTH)
    ort_threads: int = setting(0, "ONNX Runtime intra-op threads per session (0: its default)", BOTH)
    reload_interval_s: float = setting(
        2.0,
        "how often the model directory is checked for new or changed bundles",
        BOTH,
    )
    heartbeat_interval_s: float = setting(1.0, "how often a worker announces itself", BOTH)
    heartbeat_max_age_s: float = setting(15.0, "a worker silent this long counts as gone for readiness", API)
    metrics_port: int = setting(9100, "worker: port of its Prometheus /metrics (0: none)", WORKER)
    worker_id: str = setting(
        None,
        "worker: consumer name in the Redis consumer group",
        BOTH,
        factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
    )
    retry_after_s: int = setting(1, "Retry-After seconds sent with 429 and 503", API)
    api_threads: int = setting(256, "API: threads for blocking work (image decoding, model listing)", API)
    api_workers: int = setting(1, "API processes (uvicorn workers) sharing the port; needs --redis-url", API)
    # secrets: never in a repr or a log
    api_token: str | None = setting(
        None,
        "bearer tokens (comma-separated, for rotation) every endpoint but /health/* requires; unset: no "
        "authentication",
        API,
        repr=False,
    )
    metrics_token: str | None = setting(
        None,
        "bearer tokens also accepted on /metrics (e.g. Prometheus's own); comma-separated",
        API,
        repr=False,
    )

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


def names_for(role: str) -> tuple[str, ...]:
    """The settings a process of ``role`` (``api`` or ``worker``) reads: its own and ``both``."""
    return tuple(item.name for item in fields(Settings) if item.metadata["role"] in (role, BOTH))


def _help(item: Any) -> str:
    return item.metadata["help"]


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
                help=f"{_help(item)} [{env}]",
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
            help=f"{_help(item)} [{env}]" + (" (prefer the variable: ps shows flags)" if secret else ""),
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
