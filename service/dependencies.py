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
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import anyio
import anyio.to_thread
from fastapi import Depends, Request
from prometheus_client import CollectorRegistry

from service.bundles.catalog import ManifestCatalog
from service.metrics import ApiMetrics
from service.queue.base import WorkQueue
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


def _from_state(name: str) -> Callable[[Request], Awaitable[Any]]:
    """A dependency returning ``request.app.state.<name>``."""

    async def dependency(request: Request) -> Any:
        return getattr(request.app.state, name)

    dependency.__name__ = f"get_{name}"
    return dependency


SettingsDep = Annotated[Settings, Depends(_from_state("settings"))]
QueueDep = Annotated[WorkQueue, Depends(_from_state("queue"))]
CatalogDep = Annotated[ManifestCatalog, Depends(_from_state("catalog"))]
ScoringDep = Annotated[ScoringService, Depends(_from_state("scoring"))]
MetricsDep = Annotated[ApiMetrics, Depends(_from_state("metrics"))]
RegistryDep = Annotated[CollectorRegistry, Depends(_from_state("registry"))]
PixelsDep = Annotated[PixelThreads, Depends(_from_state("pixels"))]
