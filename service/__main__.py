"""``python -m service serve|worker``: the serving processes (no torch, no ``training`` import).

- ``serve`` without a Redis URL: embedded mode, API + in-process queue + one worker thread;
- ``serve --redis-url URL``: the API alone, feeding Redis Streams;
- ``worker --redis-url URL``: a batching ONNX Runtime worker (run any number, anywhere).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from service import settings as settings_module

if TYPE_CHECKING:  # heavy imports happen inside the commands
    from prometheus_client import CollectorRegistry
    from starlette.types import ASGIApp

    from service.queue.base import WorkQueue
    from service.worker import BatchingWorker

ARGV_VARIABLE = "USFAD_SERVE_ARGV"  # how ``--api-workers`` processes get the command line
# Which flags each command takes: the settings' roles (service/settings.py).
API_SETTINGS = settings_module.names_for(settings_module.API)
WORKER_SETTINGS = settings_module.names_for(settings_module.WORKER)


def build_parser() -> argparse.ArgumentParser:
    """Parser of ``python -m service``; every flag also reads its ``USFAD_*`` variable."""
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="HTTP API (embedded worker unless --redis-url is set)")
    settings_module.add_arguments(serve, API_SETTINGS)
    worker = commands.add_parser("worker", help="batching ONNX Runtime worker on Redis Streams")
    settings_module.add_arguments(worker, WORKER_SETTINGS)
    return parser


def run_api(settings: settings_module.Settings, argv: Sequence[str] | None = None) -> int:
    """Serve HTTP with uvicorn until interrupted (``api_workers`` processes with Redis)."""
    import uvicorn

    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": "warning",
        "access_log": False,
    }
    if settings.api_workers > 1:
        if not settings.redis_url:
            print("error: --api-workers > 1 needs --redis-url (embedded is one process)", file=sys.stderr)
            return 2
        from service.metrics import shared_metrics_dir

        # Each uvicorn worker process rebuilds the app from the same command line (spawned, not forked)
        # and records its metrics in the shared directory, so that one scrape sums all processes.
        os.environ[ARGV_VARIABLE] = json.dumps(list(sys.argv[1:] if argv is None else argv))
        with shared_metrics_dir():
            uvicorn.run(
                "service.__main__:app_from_argv", factory=True, workers=settings.api_workers, **options
            )
        return 0
    uvicorn.run(build_app(settings), **options)
    return 0


def app_from_argv() -> ASGIApp:
    """The API app of one uvicorn worker process, from the command line the parent stored."""
    args = build_parser().parse_args(json.loads(os.environ[ARGV_VARIABLE]))
    return build_app(settings_module.from_args(args))


def build_app(settings: settings_module.Settings) -> ASGIApp:
    """The API app with its queue: Redis Streams, or (no Redis URL) in-process queue and worker."""
    from prometheus_client import CollectorRegistry

    from service.api import create_app

    registry = CollectorRegistry()
    embedded = None
    if settings.redis_url:
        from service.queue.redis import RedisStreamQueue

        queue = RedisStreamQueue(
            settings.redis_url, settings.queue_prefix, max_connections=settings.api_threads + 16
        )
        mode = f"API on Redis {settings.redis_url} (prefix {settings.queue_prefix!r}), pid {os.getpid()}"
    else:
        from service.queue.memory import InProcessQueue
        from service.worker import BatchingWorker, InlineBatcher

        queue = InProcessQueue()
        # The worker thread collects the image models' jobs (and reclaims every model's); the
        # tabular models' jobs are scored on the event loop by the same worker code.
        embedded = make_worker(settings, queue, registry, kinds=("image",))
        inline = BatchingWorker(queue, embedded.catalog.loaded(), settings, embedded.metrics, ("tabular",))
        queue.on_enqueue = InlineBatcher(inline).kick
        mode = "embedded: API + in-process queue + one worker"
    logging.getLogger("usfad").info("%s; models from %s", mode, settings.model_dir)
    return create_app(settings, queue, registry, embedded)


def make_worker(
    settings: settings_module.Settings,
    queue: WorkQueue,
    registry: CollectorRegistry,
    kinds: tuple[str, ...] | None = None,
) -> BatchingWorker:
    """A ``BatchingWorker`` over ``queue`` with its metrics in ``registry`` (collecting ``kinds``)."""
    from service.bundles.catalog import BundleCatalog
    from service.metrics import WorkerMetrics
    from service.worker import BatchingWorker

    metrics = WorkerMetrics(registry)
    bundles = BundleCatalog(
        settings.model_dir,
        device=settings.device,
        threads=settings.ort_threads,
        interval_s=settings.reload_interval_s,
        on_failure=lambda name, _: metrics.load_failures.labels(name).inc(),
    )
    bundles.refresh(force=True)
    return BatchingWorker(queue, bundles, settings, metrics, kinds)


def run_worker(settings: settings_module.Settings) -> int:
    """Consume Redis Streams until SIGTERM/SIGINT; metrics on ``metrics_port``."""
    if not settings.redis_url:
        print("usfad worker needs --redis-url (or USFAD_REDIS_URL)", file=sys.stderr)
        return 2
    from prometheus_client import CollectorRegistry, start_http_server

    from service.queue.redis import RedisStreamQueue

    registry = CollectorRegistry()
    worker = make_worker(settings, RedisStreamQueue(settings.redis_url, settings.queue_prefix), registry)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr="0.0.0.0", registry=registry)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: worker.stop())
    logging.getLogger("usfad").info(
        "worker %s on %s, models %s", settings.worker_id, settings.redis_url, worker.catalog.names()
    )
    worker.run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m service``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        settings = settings_module.from_args(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return run_api(settings, argv) if args.command == "serve" else run_worker(settings)


if __name__ == "__main__":
    sys.exit(main())
