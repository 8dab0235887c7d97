"""What the API does per request, free of HTTP: validate, enqueue, await the result, shape the answer."""

from __future__ import annotations

import base64
import math
import os
import random
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from service.errors import InputError
from service.images import decode_image, heatmap_png, resize_for_model, resize_map
from service.inputs import validate_tabular_rows
from service.manifest import Manifest, validate_model_name
from service.metrics import ApiMetrics
from service.queue import Job, Result, WorkQueue
from service.registry import ManifestCatalog
from service.schemas import MapFormat
from service.settings import Settings


class ServiceError(Exception):
    """A non-input failure with its HTTP status (404, 500, 504 …)."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


@dataclass(frozen=True)
class ImageUpload:
    """One uploaded image: its bytes and, for multipart uploads, its file name."""

    data: bytes
    filename: str | None


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


# ``uuid.uuid4()`` reads the OS's random source on every call, which cost 6% of the API's CPU
# under load in the py-spy profile; request ids need uniqueness, not secrecy, so a Mersenne
# Twister seeded from the OS (and reseeded in a forked child) draws them instead.
_IDS = random.Random(os.urandom(32))
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _IDS.seed(os.urandom(32)))


def new_request_id() -> str:
    """A random 128-bit request id, 32 hex digits."""
    return f"{_IDS.getrandbits(128):032x}"


class Scorer:
    """Turns requests into queue jobs and worker results into responses."""

    def __init__(
        self, settings: Settings, queue: WorkQueue, catalog: ManifestCatalog, metrics: ApiMetrics
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.catalog = catalog
        self.metrics = metrics

    def manifest(self, model: str, version: str | None) -> Manifest:
        """The manifest of a valid, loaded ``model``; 404 ``ServiceError`` for an unknown version."""
        manifest = self.catalog.get(validate_model_name(model))
        if version is not None and version != manifest.version:
            raise ServiceError(
                404, f"model {model!r} serves version {manifest.version!r}, not {version!r}", "version"
            )
        return manifest

    async def submit(
        self, request_id: str, model: str, version: str | None, inputs: np.ndarray, timeout_s: float | None
    ) -> Result:
        """Enqueue and await the worker's result; 504 when the deadline passes first.

        Runs in the event loop: the queue's ``enqueue_async`` / ``wait_async`` never block it.
        """
        timeout = min(timeout_s or self.settings.request_timeout_s, self.settings.request_timeout_s)
        now = time.time()
        job = Job(request_id, model, version, now + timeout, now, inputs)
        depth = await self.queue.enqueue_async(job, self.settings.max_queue_depth)
        self.metrics.queue_depth.labels(model).set(depth)
        result = await self.queue.wait_async(request_id, job.deadline - time.time())
        if result is None:
            raise ServiceError(504, f"no result within the deadline of {timeout:g} s")
        if result.status != 200:
            raise ServiceError(result.status, result.error or "the worker failed on this request")
        return result

    def tabular_inputs(self, model: str, version: str | None, rows: Any) -> np.ndarray:
        """Validated float32 rows for ``model``; errors name ``rows[i][j]``."""
        manifest = self.manifest(model, version)
        if manifest.kind != "tabular":
            raise InputError("model", f"model {model!r} is an image model; use POST /score/image")
        return validate_tabular_rows(rows, manifest)

    def tabular_answer(self, request_id: str, model: str, result: Result, threshold: float | None) -> bytes:
        """The JSON body of a tabular answer (``TabularResponse``'s shape), serialised with orjson.

        Built from plain lists rather than pydantic models: for many rows this is the API's
        largest cost after parsing. ``is_anomaly`` is ``score > threshold`` (in float64).
        """
        cut = threshold if threshold is not None else float(result.threshold)
        scores = result.arrays["score"]
        flags = (scores.astype(np.float64) > cut).tolist()
        nlls = [value if math.isfinite(value) else None for value in result.arrays["nll"].tolist()]
        return orjson.dumps(
            {
                "request_id": request_id,
                "model": model,
                "version": result.version,
                "threshold": cut,
                "results": [
                    {"score": score, "nll": nll, "is_anomaly": flag}
                    for score, nll, flag in zip(scores.tolist(), nlls, flags, strict=True)
                ],
            }
        )

    def image_inputs(
        self, model: str, version: str | None, uploads: list[ImageUpload]
    ) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """Decode and resize the uploads to the model's size: (uint8 batch, original (h, w) per image)."""
        manifest = self.manifest(model, version)
        if manifest.kind != "image":
            raise InputError("model", f"model {model!r} is a tabular model; use POST /score/tabular")
        if not uploads:
            raise InputError("images", "no image in the request: upload files or send one image as the body")
        if len(uploads) > self.settings.max_images:
            raise InputError(
                "images", f"{len(uploads)} images, at most {self.settings.max_images} per request", 413
            )
        height, width = manifest.image_size
        originals = []
        resized = []
        for index, upload in enumerate(uploads):
            pixels = decode_image(
                upload.data,
                manifest.color_mode,
                f"images[{index}]",
                max_pixels=self.settings.max_image_pixels,
            )
            originals.append(pixels.shape[:2])
            resized.append(resize_for_model(pixels, height, width))
        return np.stack(resized), originals

    def image_answer(
        self,
        request_id: str,
        model: str,
        uploads: list[ImageUpload],
        originals: list[tuple[int, int]],
        result: Result,
        threshold: float | None,
        map_format: MapFormat,
    ) -> bytes:
        """The JSON body of an image answer (``ImageResponse``'s shape), serialised with orjson.

        Scores per image, each anomaly map resized back to its image's own size. Plain dicts
        and numpy arrays straight into orjson: pydantic models cost more than the model itself
        for ``map=array`` (one Python float per pixel, validated twice).
        """
        cut = threshold if threshold is not None else float(result.threshold)
        maps = result.arrays.get("anomaly_map")
        scores = result.arrays["score"].tolist()
        nlls = result.arrays["nll"].tolist()
        results = []
        for index, (upload, (original_h, original_w)) in enumerate(zip(uploads, originals, strict=True)):
            anomaly_map = None
            if maps is not None and map_format is not MapFormat.none:
                anomaly_map = _map_answer(resize_map(maps[index], original_h, original_w), map_format)
            results.append(
                {
                    "index": index,
                    "filename": upload.filename,
                    "width": original_w,
                    "height": original_h,
                    "score": scores[index],
                    "nll": nlls[index] if math.isfinite(nlls[index]) else None,
                    "is_anomaly": scores[index] > cut,
                    "anomaly_map": anomaly_map,
                }
            )
        answer = {
            "request_id": request_id,
            "model": model,
            "version": result.version or "",
            "threshold": cut,
            "results": results,
        }
        return orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)


def _map_answer(anomaly_map: np.ndarray, map_format: MapFormat) -> dict[str, Any]:
    """``AnomalyMap``'s shape: a base64 PNG heat map, or the float32 values (row-major)."""
    low, high = float(anomaly_map.min()), float(anomaly_map.max())
    height, width = anomaly_map.shape
    answer = {"format": map_format.value, "width": width, "height": height, "low": low, "high": high}
    if map_format is MapFormat.png:
        encoded = base64.b64encode(heatmap_png(anomaly_map, low, high)).decode()
        return {**answer, "png_base64": encoded, "values": None}
    return {**answer, "png_base64": None, "values": np.ascontiguousarray(anomaly_map, dtype=np.float32)}
