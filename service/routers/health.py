"""``GET /health/live``, ``GET /health/ready`` and ``GET /metrics`` (Prometheus text)."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.dependencies import CatalogDep, MetricsDep, QueueDep, RegistryDep, SettingsDep
from service.errors import QueueUnavailable
from service.http_errors import error_response
from service.metrics import scrape
from service.queue.base import serving_workers
from service.schemas import ErrorResponse
from service.worker import heavy_modules_loaded

router = APIRouter(tags=["health"])


@router.get("/health/live")
def live() -> dict[str, Any]:
    """The process answers (and which heavy modules it imported: should be none)."""
    return {"status": "live", "pid": os.getpid(), "heavy_modules": heavy_modules_loaded()}


@router.get(
    "/health/ready",
    responses={503: {"model": ErrorResponse, "description": "Redis down, no worker, a model not loaded"}},
)
def ready(catalog: CatalogDep, queue: QueueDep, settings: SettingsDep) -> JSONResponse:
    """200 only when Redis answers and every model is loaded on at least one live worker."""
    if not queue.ping():
        return error_response(
            503,
            "queue backend (Redis) does not answer",
            headers={"Retry-After": str(settings.retry_after_s)},
        )
    serving = serving_workers(queue, settings.heartbeat_max_age_s)
    models = catalog.names()
    missing = [name for name in models if not serving.get(name)]
    workers = queue.workers(settings.heartbeat_max_age_s)
    if not workers or missing:
        message = "no live worker" if not workers else f"models not loaded on any worker: {missing}"
        return error_response(503, message, headers={"Retry-After": str(settings.retry_after_s)})
    return JSONResponse({"status": "ready", "models": models, "workers": len(workers)})


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={
        200: {
            "description": "Prometheus text exposition format (not JSON)",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
def prometheus_metrics(
    catalog: CatalogDep, queue: QueueDep, metrics: MetricsDep, registry: RegistryDep
) -> Response:
    """Prometheus text, summed over all API processes; queue depths are refreshed at each scrape."""
    try:
        for name in catalog.names():
            metrics.queue_depth.labels(name).set(queue.depth(name))
    except QueueUnavailable:
        pass
    return Response(scrape(registry), media_type=CONTENT_TYPE_LATEST)
