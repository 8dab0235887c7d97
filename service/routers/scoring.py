"""``POST /score/tabular`` and ``POST /score/image``: read the request, hand it to ``ScoringService``.

The HTTP side only: content types, multipart forms, query and form fields. Parsing rows,
decoding images, enqueueing and shaping the answer are ``service.scoring.ScoringService``'s.
``answer_tabular`` is shared by the route and the ASGI fast path (``service.fast_path``), which
answers ``/score/tabular`` in front of FastAPI; the route stays declared for OpenAPI and ``/docs``.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.dependencies import PixelsDep, ScoringDep, SettingsDep
from service.errors import InputError
from service.schemas import (
    ERROR_RESPONSES,
    FiniteFloat,
    ImageResponse,
    MapFormat,
    TabularRequest,
    TabularResponse,
)
from service.scoring import ImageUpload, ScoringService, new_request_id
from service.tabular_request import TabularCall, parse_tabular_request
from service.verdicts import Rule

IMAGE_CONTENT_TYPES = ("image/", "application/octet-stream")
OFFLOAD_BYTES = 256 * 1024  # tabular bodies larger than this are parsed in a worker thread
MAX_FORM_FIELDS = 20  # non-file multipart fields (model, version, threshold, map …)

router = APIRouter(tags=["scoring"])


@router.post(
    "/score/tabular",
    response_model=TabularResponse,
    responses=ERROR_RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": TabularRequest.model_json_schema()}},
        }
    },
)
async def score_tabular(request: Request, scoring: ScoringDep) -> Response:
    """Score rows of a tabular model: latent-norm ``score``, ``nll``, ``is_anomaly`` per row.

    Fully asynchronous: the body is parsed with orjson and checked (``service.tabular_request``)
    in the event loop (in a thread when it is large), the job is enqueued and its result
    awaited without holding a thread, and the answer is serialised with orjson.
    """
    request.state.request_id = request_id = new_request_id()
    state = request.scope.setdefault("state", {})
    body = await request.body()
    answer = await answer_tabular(scoring, request_id, request.headers.get("content-type"), body, state)
    return Response(answer, media_type="application/json")


async def answer_tabular(
    scoring: ScoringService, request_id: str, content_type: str | None, body: bytes, state: dict[str, Any]
) -> bytes:
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


@router.post(
    "/score/image",
    response_model=ImageResponse,
    responses=ERROR_RESPONSES,
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
    scoring: ScoringDep,
    settings: SettingsDep,
    pixels: PixelsDep,
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
