"""What the routes take from the application: the objects ``create_app`` puts on ``app.state``.

A route names what it needs as an annotated parameter (``scoring: ScoringDep``) and FastAPI
hands it over through ``Depends``; none of these adds a parameter to the OpenAPI schema. The
getters are ``async`` so FastAPI calls them in the event loop rather than in a thread of its
pool (a synchronous dependency would cost every request a thread hop).

| ``app.state`` | type | what it is |
| --- | --- | --- |
| ``settings`` | ``Settings`` | every knob (``service/settings.py``) |
| ``queue`` | ``WorkQueue`` | Redis Streams or the in-process queue |
| ``catalog`` | ``ManifestCatalog`` | the served models' manifests |
| ``scoring`` | ``ScoringService`` | validate, enqueue, await, answer |
| ``metrics`` | ``ApiMetrics`` | the API's Prometheus metrics |
| ``registry`` | ``CollectorRegistry`` | the registry ``/metrics`` scrapes |
| ``pixels`` | ``PixelThreads`` | the threads that decode images and draw maps |
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import anyio
import anyio.to_thread
from fastapi import Depends, Request
from prometheus_client import CollectorRegistry

from service.catalog import ManifestCatalog
from service.metrics import ApiMetrics
from service.queue import WorkQueue
from service.scoring import ScoringService
from service.settings import Settings

IMAGE_THREADS = max(2, os.cpu_count() or 1)  # threads decoding images and drawing maps at once
T = TypeVar("T")


class PixelThreads:
    """Image decoding and map drawing in at most ``IMAGE_THREADS`` threads at once.

    Pillow and zlib release the GIL, so these threads use the other cores; but with one thread
    per waiting request (up to ``api_threads``), dozens of them woke at once and fought the
    event loop for the GIL between C calls, and latency grew to seconds (py-spy).
    """

    limiter: anyio.CapacityLimiter | None = None  # made in the lifespan (it needs the event loop)

    def start(self) -> None:
        """Make the limiter; called in the app's lifespan, inside the event loop."""
        self.limiter = anyio.CapacityLimiter(IMAGE_THREADS)

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(functools.partial(function, *args), limiter=self.limiter)


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_queue(request: Request) -> WorkQueue:
    return request.app.state.queue


async def get_catalog(request: Request) -> ManifestCatalog:
    return request.app.state.catalog


async def get_scoring(request: Request) -> ScoringService:
    return request.app.state.scoring


async def get_metrics(request: Request) -> ApiMetrics:
    return request.app.state.metrics


async def get_registry(request: Request) -> CollectorRegistry:
    return request.app.state.registry


async def get_pixels(request: Request) -> PixelThreads:
    return request.app.state.pixels


SettingsDep = Annotated[Settings, Depends(get_settings)]
QueueDep = Annotated[WorkQueue, Depends(get_queue)]
CatalogDep = Annotated[ManifestCatalog, Depends(get_catalog)]
ScoringDep = Annotated[ScoringService, Depends(get_scoring)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]
RegistryDep = Annotated[CollectorRegistry, Depends(get_registry)]
PixelsDep = Annotated[PixelThreads, Depends(get_pixels)]
