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

from service.bundles.catalog import ManifestCatalog
from service.bundles.manifest import Manifest, validate_model_name
from service.drift import DriftMonitor
from service.errors import CalibrationError, InputError, ServiceError
from service.images import decode_for_model, heatmap_png, open_image, resize_map
from service.inputs import validate_tabular_rows
from service.masks import CalibrationFiles, check_mask, mask_answer
from service.metrics import ApiMetrics, BoundChildren
from service.queue.base import Job, Result, WorkQueue
from service.schemas import MapFormat
from service.settings import Settings
from service.verdict import OVERFLOW_REASON, overflowed
from service.verdicts import Rule, Verdict, check_rule, decide


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


def _column(result: Result, name: str, count: int) -> list[float | None]:
    """``result.arrays[name]`` as a JSON list (non-finite → null), or nulls when absent."""
    values = result.arrays.get(name)
    if values is None:
        return [None] * count
    return [value if math.isfinite(value) else None for value in values.tolist()]


def new_request_id() -> str:
    """A random 128-bit request id, 32 hex digits."""
    return f"{_IDS.getrandbits(128):032x}"


class ScoringService:
    """Turns requests into queue jobs and worker results into responses."""

    def __init__(
        self, settings: Settings, queue: WorkQueue, catalog: ManifestCatalog, metrics: ApiMetrics
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.catalog = catalog
        self.metrics = metrics
        self.drift = DriftMonitor(metrics.p_value_share)
        self._queue_depth = BoundChildren(metrics.queue_depth)
        self.calibrations = CalibrationFiles(settings.model_dir)

    def mask_cut(self, model: str, result: Result, verdict: Verdict, rule: Rule) -> float:
        """The map cut of ``map=mask``: the request's raw ``threshold``, else the calibration map
        maxima's cut at the verdict's fpr (requested or default; ``service.masks``), never the
        score cut (the score is not the returned map's maximum)."""
        if rule.threshold is not None:
            return float(rule.threshold)
        manifest = self.catalog.get(model)
        if manifest.version != result.version or verdict.fpr is None:
            raise ServiceError(503, f"model {model!r} was reloaded while answering; retry")
        check_mask(model, manifest, rule.threshold, rule.fdr)  # the answering version, too
        try:
            return self.calibrations.cut(model, manifest, verdict.fpr)
        except (CalibrationError, OSError) as error:
            message = f"calibration of {model!r} cannot be read now ({error}); retry"
            raise ServiceError(503, message) from error

    def verdict(self, model: str, result: Result, rule: Rule) -> Verdict:
        """Decide ``is_anomaly`` for a result (422 if its version cannot honour ``rule``); feed drift."""
        p_value = result.arrays.get("p_value")
        verdict = decide(
            rule,
            result.arrays["score"],
            p_value,
            float(result.threshold) if result.threshold is not None else math.nan,
            result.calibration_n,
            result.default_fpr,
            model,
        )
        if p_value is not None:
            self.drift.observe(model, p_value)
        return verdict

    def check_rule(self, model: str, version: str | None, rule: Rule) -> None:
        """Refuse (422) before enqueueing a rule the served manifest cannot honour."""
        check_rule(rule, self.manifest(model, version).calibration_n, model)

    def check_mask(self, model: str, version: str | None, rule: Rule) -> None:
        """Refuse (422) before enqueueing a ``map=mask`` request the served manifest cannot certify."""
        check_mask(model, self.manifest(model, version), rule.threshold, rule.fdr)

    def manifest(self, model: str, version: str | None) -> Manifest:
        """The manifest of a valid, loaded ``model``; 404 ``ServiceError`` for an unknown version."""
        manifest = self.catalog.get(validate_model_name(model))
        if version is not None and version != manifest.version:
            raise ServiceError(
                404, f"model {model!r} serves version {manifest.version!r}, not {version!r}", "version"
            )
        return manifest

    async def submit(
        self,
        request_id: str,
        model: str,
        version: str | None,
        inputs: np.ndarray,
        timeout_s: float | None,
        maps: bool = True,
    ) -> Result:
        """Enqueue and await the worker's result; 504 when the deadline passes first.

        Runs in the event loop: the queue's ``enqueue_async`` / ``wait_async`` never block it.
        """
        timeout = min(timeout_s or self.settings.request_timeout_s, self.settings.request_timeout_s)
        now = time.time()
        job = Job(request_id, model, version, now + timeout, now, inputs, maps=maps)
        depth = await self.queue.enqueue_async(job, self.settings.max_queue_depth)
        self._queue_depth(model).set(depth)
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

    def tabular_answer(self, request_id: str, model: str, result: Result, rule: Rule) -> bytes:
        """The JSON body of a tabular answer (``TabularResponse``'s shape), serialised with orjson.

        Built from plain lists rather than pydantic models: for many rows this is the API's
        largest cost after parsing. ``is_anomaly`` follows ``service.verdicts.decide``.
        """
        verdict = self.verdict(model, result, rule)
        count = result.arrays["score"].shape[0]
        overflow = _overflow(result)  # never a null score read as "normal" (service.verdict)
        nll_column = _column(result, "nll", count)
        nlls = [None if bad else nll for nll, bad in zip(nll_column, overflow.tolist(), strict=True)]
        columns = zip(
            _column(result, "score", count),
            nlls,
            _column(result, "p_value", count),
            _column(result, "p_value_analytic", count),
            (verdict.flags | overflow).tolist(),
            [OVERFLOW_REASON if bad else None for bad in overflow.tolist()],
            strict=True,
        )
        return orjson.dumps(
            {
                "request_id": request_id,
                "model": model,
                "version": result.version,
                "threshold": verdict.threshold,
                "fpr": verdict.fpr,
                "fdr": verdict.fdr,
                "calibration_n": verdict.calibration_n,
                "results": [
                    {
                        "score": score,
                        "nll": nll,
                        "p_value": p,
                        "p_value_analytic": pa,
                        "is_anomaly": flag,
                        "reason": reason,
                    }
                    for score, nll, p, pa, flag, reason in columns
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
        limit = self.settings.max_request_pixels
        declared = 0
        for index, upload in enumerate(uploads):  # headers only: refuse before any pixel is decoded
            image = open_image(upload.data, f"images[{index}]", self.settings.max_image_pixels)
            declared += image.width * image.height
            if declared > limit:
                raise InputError(
                    "images", f"the images declare more than {limit} pixels together (at most {limit})", 413
                )
        originals = []
        resized = []
        for index, upload in enumerate(uploads):
            original, pixels = decode_for_model(  # in at most IMAGE_THREADS threads (service.dependencies)
                upload.data,
                manifest.color_mode,
                height,
                width,
                f"images[{index}]",
                max_pixels=self.settings.max_image_pixels,
            )
            originals.append(original)
            resized.append(pixels)
        return np.stack(resized), originals

    def image_answer(
        self,
        request_id: str,
        model: str,
        uploads: list[ImageUpload],
        originals: list[tuple[int, int]],
        result: Result,
        rule: Rule,
        map_format: MapFormat,
    ) -> bytes:
        """The JSON body of an image answer (``ImageResponse``'s shape), serialised with orjson.

        Scores per image, each anomaly map resized back to its image's own size. Plain dicts
        and numpy arrays straight into orjson: pydantic models cost more than the model itself
        for ``map=array`` (one Python float per pixel, validated twice).
        """
        verdict = self.verdict(model, result, rule)
        maps = result.arrays.get("anomaly_map")
        count = len(uploads)
        scores = _column(result, "score", count)
        nlls = _column(result, "nll", count)
        p_values = _column(result, "p_value", count)
        analytic = _column(result, "p_value_analytic", count)
        overflow = _overflow(result)
        flags = verdict.flags | overflow
        results = []
        cut = self.mask_cut(model, result, verdict, rule) if map_format is MapFormat.mask else math.nan
        for index, (upload, (original_h, original_w)) in enumerate(zip(uploads, originals, strict=True)):
            anomaly_map = None
            bad = bool(overflow[index])
            if maps is not None and map_format is MapFormat.mask and not bad:
                anomaly_map = mask_answer(maps[index], cut, original_h, original_w)
            elif maps is not None and map_format is not MapFormat.none and not bad:
                anomaly_map = _map_answer(resize_map(maps[index], original_h, original_w), map_format)
            results.append(
                {
                    "index": index,
                    "filename": upload.filename,
                    "width": original_w,
                    "height": original_h,
                    "score": None if bad else scores[index],
                    "nll": None if bad else nlls[index],
                    "p_value": p_values[index],
                    "p_value_analytic": analytic[index],
                    "is_anomaly": bool(flags[index]),
                    "reason": OVERFLOW_REASON if bad else None,
                    "anomaly_map": anomaly_map,
                }
            )
        answer = {
            "request_id": request_id,
            "model": model,
            "version": result.version or "",
            "threshold": verdict.threshold,
            "fpr": verdict.fpr,
            "fdr": verdict.fdr,
            "calibration_n": verdict.calibration_n,
            "results": results,
        }
        return orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)


def _overflow(result: Result) -> np.ndarray:
    """The worker's per-input overflow flags (``service.verdict``), or recomputed from the scores."""
    flags = result.arrays.get("overflow")
    if flags is not None:
        return flags.astype(bool).reshape(-1) | overflowed(result.arrays["score"])
    return overflowed(result.arrays["score"], result.arrays.get("anomaly_map"))


def _map_answer(anomaly_map: np.ndarray, map_format: MapFormat) -> dict[str, Any]:
    """``AnomalyMap``'s shape: a base64 PNG heat map, or the float32 values (row-major)."""
    low, high = float(anomaly_map.min()), float(anomaly_map.max())
    height, width = anomaly_map.shape
    answer = {"format": map_format.value, "width": width, "height": height, "low": low, "high": high}
    if map_format is MapFormat.png:
        encoded = base64.b64encode(heatmap_png(anomaly_map, low, high)).decode()
        return {**answer, "png_base64": encoded, "values": None}
    return {**answer, "png_base64": None, "values": np.ascontiguousarray(anomaly_map, dtype=np.float32)}
