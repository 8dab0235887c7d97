"""Request and response bodies of the HTTP API (pydantic v2; they make the OpenAPI page)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class TabularRequest(BaseModel):
    """Rows to score with a tabular model."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="model name, as listed by GET /models", examples=["demo-tabular"])
    version: str | None = Field(None, description="require this bundle version (404 if another is served)")
    rows: list[Any] = Field(
        description="rows: lists of F numbers in feature order, or objects keyed by feature name",
        examples=[[[0.1, 2.0, 3.5]]],
    )
    threshold: FiniteFloat | None = Field(
        None, description="override: is_anomaly = score > threshold (raw scores, no p-value promise)"
    )
    fpr: FiniteFloat | None = Field(
        None,
        description="false-alarm rate: is_anomaly = p_value <= fpr (default: the model's default_fpr); "
        "below 1/(n+1) of the model's n calibration samples it is refused with 422",
    )
    fdr: FiniteFloat | None = Field(
        None, description="false-discovery rate: flag this request's rows by Benjamini-Hochberg at fdr"
    )
    timeout_s: float | None = Field(None, gt=0, le=300, description="deadline of this request in seconds")


REASON_DESCRIPTION = (
    "null, or why the score is missing: `score_not_finite` when the computation overflowed float32 "
    "for this input (score and nll are then null and is_anomaly is true)"
)


class RowScore(BaseModel):
    """Scores of one row: ``score`` is the latent norm ‖φ(x) − c‖, ``nll`` is −log p(x) in nats."""

    score: float | None = Field(description="latent norm; null only when `reason` says why")
    nll: float | None = Field(description="negative log-likelihood in nats; null for models without one")
    p_value: float | None = Field(
        None, description="conformal p-value (1 + #{calibration >= score}) / (n + 1); null if uncalibrated"
    )
    p_value_analytic: float | None = Field(
        None, description="flows with base N(c, σ²I): P(χ²_d >= score² / σ²); null for other models"
    )
    is_anomaly: bool = Field(
        description="p_value <= fpr, BH rejection at fdr, or score > threshold; always true when the "
        "score is not finite"
    )
    reason: str | None = Field(None, description=REASON_DESCRIPTION)


class Decision(BaseModel):
    """The rule behind ``is_anomaly`` (fields shared by tabular and image answers)."""

    threshold: float | None = Field(
        description="the score cut used (a `threshold` override, or the model's cut at its default fpr); "
        "null for a requested fpr or fdr"
    )
    fpr: float | None = Field(None, description="false-alarm rate of the verdict (p_value <= fpr)")
    fdr: float | None = Field(None, description="Benjamini-Hochberg level of the verdict")
    calibration_n: int | None = Field(None, description="calibration samples behind p_value")


class TabularResponse(Decision):
    """Per-row results of a tabular request."""

    request_id: str
    model: str
    version: str
    results: list[RowScore]


class MapFormat(StrEnum):
    """How the anomaly map is returned: not at all, as a PNG heat map, or as a float array."""

    none = "none"
    png = "png"
    array = "array"
    mask = "mask"


class AnomalyMap(BaseModel):
    """The pixel anomaly map at the input image's own resolution, aligned with its pixels."""

    format: MapFormat
    width: int
    height: int
    low: float = Field(description="map value drawn as the coldest colour (png) / the map's minimum")
    high: float = Field(description="map value drawn as the hottest colour (png) / the map's maximum")
    png_base64: str | None = Field(None, description="PNG heat map, base64 (format png)")
    values: list[list[float]] | None = Field(
        None, description="row-major [height][width] floats (format array)"
    )
    cut: float | None = Field(
        None,
        description="format mask: pixels with map value > cut are defects (white in the PNG); at a "
        "rate the cut is the conformal cut of the calibration images' map maxima at the verdict's fpr, "
        "so a good image shows any defect pixel with probability <= fpr (with threshold: that raw "
        "value, no rate)",
    )
    defect_pixels: int | None = Field(None, description="format mask: number of defect pixels")


class ImageScore(BaseModel):
    """Scores of one image."""

    index: int
    filename: str | None
    width: int
    height: int
    score: float | None = Field(description="max of the anomaly map; null only when `reason` says why")
    nll: float | None
    p_value: float | None = None
    p_value_analytic: float | None = None
    is_anomaly: bool = Field(description="as for rows; always true when the score is not finite")
    reason: str | None = Field(None, description=REASON_DESCRIPTION)
    anomaly_map: AnomalyMap | None = Field(None, description="null for map=none and when `reason` is set")


class ImageResponse(Decision):
    """Per-image results of an image request."""

    request_id: str
    model: str
    version: str
    results: list[ImageScore]


class ErrorDetail(BaseModel):
    """What went wrong and, where there is one, the field at fault (e.g. ``rows[3][5]``)."""

    field: str | None
    message: str


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer has this shape."""

    error: ErrorDetail
    request_id: str | None = None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        404: "unknown model or version",
        413: "body, image, pixel total or image count too large (the field is named)",
        415: "body not application/json (tabular), or not a PNG, JPEG, BMP or TIFF image",
        422: "invalid input (the field is named)",
        429: "queue full; retry after Retry-After seconds",
        503: "Redis or workers unavailable; retry after Retry-After seconds",
        504: "deadline passed before the result was ready",
    }.items()
}
