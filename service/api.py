"""The HTTP API (FastAPI): scoring endpoints, model listing, health, Prometheus metrics.

``create_app`` wires a queue (Redis Streams or in-process) and a manifest catalog; in the
embedded mode it also runs one ``BatchingWorker`` in a thread of this process.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

import anyio
import anyio.to_thread
import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from service.catalog import ManifestCatalog
from service.contract import NAME_PATTERN as MODEL_NAME_PATTERN
from service.errors import InputError
from service.fast_path import TabularFastPath
from service.http_errors import error_response, install_error_handlers
from service.metrics import ApiMetrics, process_exited, scrape
from service.middleware import BearerAuth, BodySizeLimit, RequestMetrics
from service.queue import QueueUnavailable, WorkQueue
from service.schemas import (
    ERROR_RESPONSES,
    ErrorResponse,
    FiniteFloat,
    ImageResponse,
    MapFormat,
    TabularRequest,
    TabularResponse,
)
from service.scoring import ImageUpload, ScoringService, new_request_id
from service.settings import Settings
from service.tabular_request import TabularCall, parse_tabular_request
from service.verdicts import Rule
from service.worker import BatchingWorker, heavy_modules_loaded

IMAGE_CONTENT_TYPES = ("image/", "application/octet-stream")
OFFLOAD_BYTES = 256 * 1024  # tabular bodies larger than this are parsed in a worker thread
IMAGE_THREADS = max(2, os.cpu_count() or 1)  # threads decoding images and drawing maps at once
MAX_FORM_FIELDS = 20  # non-file multipart fields (model, version, threshold, map …)
T = TypeVar("T")


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
    pixels = _PixelThreads()
    metrics = ApiMetrics(registry)
    catalog = ManifestCatalog(settings.model_dir, settings.reload_interval_s)
    scoring = ScoringService(settings, queue, catalog, metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        pixels.limiter = anyio.CapacityLimiter(IMAGE_THREADS)
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
        "flows.\n\n" + _limits_text(settings),
        version="1",
        lifespan=lifespan,
    )
    app.state.scoring = scoring
    app.state.catalog = catalog

    install_error_handlers(app, settings)

    # -- scoring --------------------------------------------------------------------------------
    @app.post(
        "/score/tabular",
        response_model=TabularResponse,
        responses=ERROR_RESPONSES,
        tags=["scoring"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": TabularRequest.model_json_schema()}},
            }
        },
    )
    async def score_tabular(request: Request) -> Response:
        """Score rows of a tabular model: latent-norm ``score``, ``nll``, ``is_anomaly`` per row.

        Fully asynchronous: the body is parsed with orjson and checked (``service.tabular_request``)
        in the event loop (in a thread when it is large), the job is enqueued and its result
        awaited without holding a thread, and the answer is serialised with orjson.
        """
        request.state.request_id = request_id = new_request_id()
        state = request.scope.setdefault("state", {})
        body = await request.body()
        answer = await tabular(request_id, request.headers.get("content-type"), body, state)
        return Response(answer, media_type="application/json")

    async def tabular(request_id: str, content_type: str | None, body: bytes, state: dict[str, Any]) -> bytes:
        """The tabular endpoint's work, shared by the FastAPI route and ``TabularFastPath``."""
        _require_json(content_type)
        if len(body) > OFFLOAD_BYTES:  # parsing and checking big bodies would stall the event loop
            call, inputs = await run_in_threadpool(_tabular_call, scoring, body)
        else:
            call, inputs = _tabular_call(scoring, body)
        state["model"] = call.model
        rule = Rule(call.threshold, call.fpr, call.fdr)
        scoring.check_rule(call.model, call.version, rule)
        result = await scoring.submit(request_id, call.model, call.version, inputs, call.timeout_s)
        return scoring.tabular_answer(request_id, call.model, result, rule)

    @app.post(
        "/score/image",
        response_model=ImageResponse,
        responses=ERROR_RESPONSES,
        tags=["scoring"],
        openapi_extra={
            "requestBody": {
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "images": {"type": "array", "items": {"type": "string", "format": "binary"}}
                            },
                        }
                    },
                    "image/png": {"schema": {"type": "string", "format": "binary"}},
                    "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                }
            }
        },
    )
    async def score_image(
        request: Request,
        model: Annotated[str | None, Query(description="model name (or a form field `model`)")] = None,
        version: Annotated[str | None, Query(description="require this bundle version")] = None,
        threshold: Annotated[FiniteFloat | None, Query(description="override the model's threshold")] = None,
        fpr: Annotated[
            FiniteFloat | None, Query(description="false-alarm rate: is_anomaly = p_value <= fpr")
        ] = None,
        fdr: Annotated[
            FiniteFloat | None, Query(description="flag this request's images by Benjamini-Hochberg at fdr")
        ] = None,
        map: Annotated[
            MapFormat,
            Query(
                description="anomaly map: none, png (heat map), array, or mask (defect pixels; a good "
                "image shows any with probability <= fpr)"
            ),
        ] = MapFormat.png,
        timeout_s: Annotated[float | None, Query(gt=0, le=300, description="deadline in seconds")] = None,
    ) -> Response:
        """Score images (multipart files, or one image as the raw body): score, ``is_anomaly``, anomaly map.

        The map has the input image's own width and height, pixel-aligned with it.
        """
        request.state.request_id = new_request_id()
        fields: dict[str, str] = {}
        uploads: list[ImageUpload] = []
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            form = await _read_form(request, settings.max_images)
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    uploads.append(ImageUpload(await value.read(), value.filename))
                else:
                    fields[key] = value
        elif content_type.startswith(IMAGE_CONTENT_TYPES) or content_type == "":
            uploads.append(ImageUpload(await request.body(), None))
        else:
            raise InputError("content-type", f"{content_type!r} is not multipart/form-data or image/*", 415)
        model = fields.get("model", model)
        if model is None:
            raise InputError("model", "is required (query parameter or form field)")
        version = fields.get("version", version)
        threshold = _form_float(fields, "threshold", threshold)
        rule = Rule(threshold, _form_float(fields, "fpr", fpr), _form_float(fields, "fdr", fdr))
        map_format = _form_map(fields, map)
        inputs, originals = await pixels.run(scoring.image_inputs, model, version, uploads)
        request.state.model = model
        scoring.check_rule(model, version, rule)
        if map_format is MapFormat.mask:
            scoring.check_mask(model, version, rule)
        result = await scoring.submit(
            request.state.request_id, model, version, inputs, timeout_s, maps=map_format is not MapFormat.none
        )
        answer = await pixels.run(
            scoring.image_answer,
            request.state.request_id,
            model,
            uploads,
            originals,
            result,
            rule,
            map_format,
        )
        return Response(answer, media_type="application/json")

    # -- models, health, metrics ----------------------------------------------------------------
    @app.get("/models", tags=["models"])
    def list_models() -> dict[str, Any]:
        """Every served model with its manifest and the workers that have it loaded."""
        serving = _serving(queue, settings)
        return {
            "models": [
                {
                    "name": name,
                    "version": manifest.version,
                    "kind": manifest.kind,
                    "workers": serving.get(name, []),
                    "manifest": manifest.raw,
                }
                for name, manifest in catalog.items().items()
            ],
            "refused": catalog.failures(),
        }

    @app.get(
        "/models/{name}", responses={404: ERROR_RESPONSES[404], 422: ERROR_RESPONSES[422]}, tags=["models"]
    )
    def get_model(name: str) -> dict[str, Any]:
        """One model's manifest and the workers (and versions) serving it."""
        manifest = catalog.get(name)
        return {
            "name": name,
            "version": manifest.version,
            "kind": manifest.kind,
            "workers": _serving(queue, settings).get(name, []),
            "manifest": manifest.raw,
        }

    @app.get("/health/live", tags=["health"])
    def live() -> dict[str, Any]:
        """The process answers (and which heavy modules it imported: should be none)."""
        return {"status": "live", "pid": os.getpid(), "heavy_modules": heavy_modules_loaded()}

    @app.get(
        "/health/ready",
        tags=["health"],
        responses={503: {"model": ErrorResponse, "description": "Redis down, no worker, a model not loaded"}},
    )
    def ready() -> JSONResponse:
        """200 only when Redis answers and every model is loaded on at least one live worker."""
        if not queue.ping():
            return error_response(
                503,
                "queue backend (Redis) does not answer",
                headers={"Retry-After": str(settings.retry_after_s)},
            )
        serving = _serving(queue, settings)
        models = catalog.names()
        missing = [name for name in models if not serving.get(name)]
        workers = queue.workers(settings.heartbeat_max_age_s)
        if not workers or missing:
            message = "no live worker" if not workers else f"models not loaded on any worker: {missing}"
            return error_response(503, message, headers={"Retry-After": str(settings.retry_after_s)})
        return JSONResponse({"status": "ready", "models": models, "workers": len(workers)})

    @app.get(
        "/metrics",
        tags=["health"],
        response_class=PlainTextResponse,
        responses={
            200: {
                "description": "Prometheus text exposition format (not JSON)",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    )
    def prometheus_metrics() -> Response:
        """Prometheus text, summed over all API processes; queue depths are refreshed at each scrape."""
        try:
            for name in catalog.names():
                metrics.queue_depth.labels(name).set(queue.depth(name))
        except QueueUnavailable:
            pass
        return Response(scrape(registry), media_type=CONTENT_TYPE_LATEST)

    app.openapi = lambda: _openapi(app, settings, catalog)  # type: ignore[method-assign]
    fast = TabularFastPath(app, tabular, settings)
    guarded = BearerAuth(fast, settings.tokens(), settings.metrics_tokens())
    return BodySizeLimit(RequestMetrics(guarded, metrics), settings.max_body_bytes)


class _PixelThreads:
    """Image decoding and map drawing in at most ``IMAGE_THREADS`` threads at once.

    Pillow and zlib release the GIL, so these threads use the other cores; but with one thread
    per waiting request (up to ``api_threads``), dozens of them woke at once and fought the
    event loop for the GIL between C calls, and latency grew to seconds (py-spy).
    """

    limiter: anyio.CapacityLimiter | None = None  # made in the lifespan (it needs the event loop)

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(functools.partial(function, *args), limiter=self.limiter)


MODEL_NAME_SCHEMA = {"pattern": MODEL_NAME_PATTERN.pattern, "minLength": 1, "maxLength": 64}


def _limits_text(settings: Settings) -> str:
    """The limits the server enforces, as stated in the OpenAPI description."""
    return (
        f"Limits: request body at most {settings.max_body_bytes} bytes (413 before it is read); "
        f"at most {settings.max_images} images per request, {settings.max_image_pixels} pixels per image "
        f"and {settings.max_request_pixels} pixels per request (413, checked from the headers); "
        f"images PNG, JPEG, BMP or TIFF (415 otherwise); model names match "
        f"`{MODEL_NAME_PATTERN.pattern}` without `..`; at most {settings.max_queue_depth} queued "
        f"requests per model (429); deadline at most {settings.request_timeout_s:g} s (504)."
        + (" Every endpoint but /health/live and /health/ready needs `Authorization: Bearer <token>` (401)."
           if settings.tokens() else "")
    )


def _openapi(app: FastAPI, settings: Settings, catalog: ManifestCatalog) -> dict[str, Any]:
    """FastAPI's schema plus the limits it cannot infer: model-name pattern, row length per model.

    The per-model row lengths come from the manifests loaded now, so the schema is rebuilt
    on each call (it is small) rather than cached.
    """
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    body = schema["paths"]["/score/tabular"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    body.setdefault("properties", {}).setdefault("model", {}).update(MODEL_NAME_SCHEMA)
    features = {name: m.features for name, m in catalog.items().items() if m.kind == "tabular"}
    if features:
        listed = ", ".join(f"{name}: {count}" for name, count in sorted(features.items()))
        rows = body["properties"].setdefault("rows", {})
        rows["description"] = f"{rows.get('description', 'rows')}. Values per row, by model: {listed}"
        rows["x-features-per-model"] = features
    named = (("/models/{name}", "get", "name"), ("/score/image", "post", "model"))
    for path, method, parameter_name in named:
        for parameter in schema["paths"].get(path, {}).get(method, {}).get("parameters", []):
            if parameter.get("name") == parameter_name:
                parameter["schema"] = {"type": "string", **MODEL_NAME_SCHEMA}
    schema["x-limits"] = {
        "max_body_bytes": settings.max_body_bytes,
        "max_images": settings.max_images,
        "max_image_pixels": settings.max_image_pixels,
        "max_request_pixels": settings.max_request_pixels,
        "max_queue_depth": settings.max_queue_depth,
        "request_timeout_s": settings.request_timeout_s,
    }
    if settings.tokens():
        schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
            "type": "http",
            "scheme": "bearer",
        }
        for path, operations in schema["paths"].items():
            if path not in ("/health/live", "/health/ready"):
                for operation in operations.values():
                    operation["security"] = [{"bearer": []}]
                    operation.setdefault("responses", {})["401"] = {
                        "description": "missing or wrong bearer token"
                    }
    return schema


def _require_json(content_type: str | None) -> None:
    """415 naming ``content-type`` unless the body is declared JSON (or not declared at all).

    A missing header is accepted (FastAPI's own convention); ``text/plain`` and form bodies are
    refused, so a client that meant something else is told at once.
    """
    if content_type is None:
        return
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise InputError("content-type", f"{content_type[:80]!r} is not application/json", 415)


async def _read_form(request: Request, max_images: int) -> Any:
    """The multipart form; too many files is 413 naming ``images``, a malformed body 422 naming ``body``.

    Starlette turns python-multipart's errors into a bare 400 (``Maximum number of files is …``);
    they are translated here into the service's documented answers.
    """
    try:
        return await request.form(max_files=max_images, max_fields=MAX_FORM_FIELDS)
    except StarletteHTTPException as error:
        detail = str(error.detail)
        if "number of files" in detail:
            raise InputError("images", f"more than {max_images} images in one request", 413) from None
        if "number of fields" in detail:
            raise InputError("body", f"more than {MAX_FORM_FIELDS} form fields", 413) from None
        raise InputError("body", f"malformed multipart body ({detail[:120]})") from None


def _tabular_call(scoring: ScoringService, body: bytes) -> tuple[TabularCall, np.ndarray]:
    """Parse a tabular body and validate its rows against the model's manifest."""
    call = parse_tabular_request(body)
    return call, scoring.tabular_inputs(call.model, call.version, call.rows)


def _serving(queue: WorkQueue, settings: Settings) -> dict[str, list[dict[str, str]]]:
    serving: dict[str, list[dict[str, str]]] = {}
    try:
        workers = queue.workers(settings.heartbeat_max_age_s)
    except QueueUnavailable:
        return serving
    for beat in workers:
        for name, version in beat.get("models", {}).items():
            serving.setdefault(name, []).append(
                {"worker": beat["worker"], "version": version, "device": beat.get("device", "")}
            )
    return serving


def _form_float(fields: dict[str, str], key: str, default: float | None) -> float | None:
    if key not in fields:
        return default
    try:
        value = float(fields[key])
    except ValueError:
        raise InputError(key, f"must be a number, got {fields[key][:40]!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise InputError(key, "must be finite")
    return value


def _form_map(fields: dict[str, str], default: MapFormat) -> MapFormat:
    if "map" not in fields:
        return default
    try:
        return MapFormat(fields["map"])
    except ValueError:
        choices = ", ".join(item.value for item in MapFormat)
        raise InputError("map", f"must be one of {choices}; got {fields['map'][:40]!r}") from None
