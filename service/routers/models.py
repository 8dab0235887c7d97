"""``GET /models`` and ``GET /models/{name}``: the served models' manifests and who serves them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service.dependencies import CatalogDep, QueueDep, SettingsDep
from service.queue.base import serving_workers
from service.schemas import ERROR_RESPONSES

router = APIRouter(tags=["models"])


@router.get("/models")
def list_models(catalog: CatalogDep, queue: QueueDep, settings: SettingsDep) -> dict[str, Any]:
    """Every served model with its manifest and the workers that have it loaded."""
    serving = serving_workers(queue, settings.heartbeat_max_age_s)
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


@router.get("/models/{name}", responses={404: ERROR_RESPONSES[404], 422: ERROR_RESPONSES[422]})
def get_model(name: str, catalog: CatalogDep, queue: QueueDep, settings: SettingsDep) -> dict[str, Any]:
    """One model's manifest and the workers (and versions) serving it."""
    manifest = catalog.get(name)
    return {
        "name": name,
        "version": manifest.version,
        "kind": manifest.kind,
        "workers": serving_workers(queue, settings.heartbeat_max_age_s).get(name, []),
        "manifest": manifest.raw,
    }
