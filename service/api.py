"""The HTTP API (FastAPI): builds the app from a queue, a catalog and the routers.

``create_app`` puts the app's objects on ``app.state`` (routes take them through
``service.dependencies``), includes the routers of ``service.routers`` (scoring, models,
health), and wraps the app in the ASGI layers, outermost first: body-size limit, request
metrics, bearer tokens, the tabular fast path (``service.fast_path``), FastAPI. In the embedded
mode it also runs one ``BatchingWorker`` in a thread of this process.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp

from service.bundles.catalog import ManifestCatalog
from service.dependencies import PixelThreads
from service.fast_path import TabularFastPath
from service.http_errors import install_error_handlers
from service.metrics import ApiMetrics, process_exited
from service.middleware import BearerAuth, BodySizeLimit, RequestMetrics
from service.openapi import limits_text, openapi_schema
from service.queue.base import WorkQueue
from service.routers import health, models, scoring
from service.scoring import ScoringService
from service.settings import Settings
from service.worker import BatchingWorker


def create_app(
    settings: Settings,
    queue: WorkQueue,
    registry: CollectorRegistry | None = None,
    embedded_worker: BatchingWorker | None = None,
) -> ASGIApp:
    """The FastAPI application wrapped in the body-limit and metrics middleware.

    ``embedded_worker`` (if given) runs in a thread of this process while the app lives.
    """
    registry = registry or CollectorRegistry()
    pixels = PixelThreads()
    metrics = ApiMetrics(registry)
    catalog = ManifestCatalog(settings.model_dir, settings.reload_interval_s)
    scoring_service = ScoringService(settings, queue, catalog, metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        pixels.start()
        catalog.refresh(force=True)
        await queue.start()  # Redis: the asyncio client and this process's reply listener
        thread = None
        if embedded_worker is not None:
            thread = threading.Thread(target=embedded_worker.run, name="usfad-embedded-worker", daemon=True)
            thread.start()
        yield
        if embedded_worker is not None and thread is not None:
            embedded_worker.stop()
            thread.join(timeout=5)
        await queue.close()
        process_exited()

    # /docs (Swagger UI) and /redoc load their scripts and styles from the fastapi-offline
    # package (served under /static-offline-docs), not from a CDN: they work on an air-gapped line.
    app = FastAPIOffline(
        title="usfad scoring service",
        description="Anomaly scores (latent norm, NLL) and pixel anomaly maps from uniformly scaling "
        "flows.\n\n" + limits_text(settings),
        version="1",
        lifespan=lifespan,
    )
    # What the routes take through service.dependencies.
    app.state.settings = settings
    app.state.queue = queue
    app.state.catalog = catalog
    app.state.scoring = scoring_service
    app.state.metrics = metrics
    app.state.registry = registry
    app.state.pixels = pixels

    install_error_handlers(app, settings)
    for router in (scoring.router, models.router, health.router):
        app.include_router(router)
    app.openapi = lambda: openapi_schema(app, settings, catalog)  # type: ignore[method-assign]

    fast = TabularFastPath(app, functools.partial(scoring.answer_tabular, scoring_service), settings)
    guarded = BearerAuth(fast, settings.tokens(), settings.metrics_tokens())
    return BodySizeLimit(RequestMetrics(guarded, metrics), settings.max_body_bytes)
