"""The OpenAPI schema: FastAPI's, plus the limits it cannot infer from the routes.

The description states the limits the server enforces; the schema adds the model-name
pattern, the row length of each tabular model (from the manifests loaded now), ``x-limits``
and, when tokens are configured, the bearer security scheme with its 401 answers.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service.bundles.catalog import ManifestCatalog
from service.contract import NAME_PATTERN as MODEL_NAME_PATTERN
from service.middleware import OPEN_PATHS
from service.settings import Settings

MODEL_NAME_SCHEMA = {"pattern": MODEL_NAME_PATTERN.pattern, "minLength": 1, "maxLength": 64}


def limits_text(settings: Settings) -> str:
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


def openapi_schema(app: FastAPI, settings: Settings, catalog: ManifestCatalog) -> dict[str, Any]:
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
            if path not in OPEN_PATHS:
                for operation in operations.values():
                    operation["security"] = [{"bearer": []}]
                    operation.setdefault("responses", {})["401"] = {
                        "description": "missing or wrong bearer token"
                    }
    return schema
