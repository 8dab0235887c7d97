"""Run directory files: ``run.json`` (a ``RunRecord``) and ``weights.pt`` (docs/contracts.md).

A leaf module: the trainers and the per-kind scorer loaders (``training/{tabular,image}/run.py``)
import it, and :mod:`training.runs` (which dispatches to those loaders) re-exports it.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from service.contract import RunRecord

RUN_FILE = "run.json"
WEIGHTS_FILE = "weights.pt"


def utc_now() -> str:
    """Current UTC time, ISO-8601 with a ``Z`` suffix."""
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def fingerprint_array(array: Any) -> str:
    """``sha256:<hex>`` of an array's bytes, shape and dtype (identifies training data)."""
    import numpy as np

    data = np.ascontiguousarray(array)
    digest = hashlib.sha256()
    digest.update(str((data.shape, str(data.dtype))).encode())
    digest.update(data.tobytes())
    return f"sha256:{digest.hexdigest()}"


def save_run(run_dir: str | Path, module: nn.Module, run: RunRecord | dict[str, Any]) -> Path:
    """Write ``run.json`` and ``weights.pt`` (a plain state dict) into ``run_dir``."""
    path = Path(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    run = {"created": utc_now(), **(run.to_json() if isinstance(run, RunRecord) else run)}
    torch.save(module.state_dict(), path / WEIGHTS_FILE)
    (path / RUN_FILE).write_text(json.dumps(run, indent=2, default=float))
    return path


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """Read ``run.json``; a clear error when the folder is not a run directory."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory: {RUN_FILE} is missing")
    return json.loads(path.read_text())


def load_weights(run_dir: str | Path) -> dict[str, torch.Tensor]:
    """The saved state dict, loaded without unpickling arbitrary objects."""
    return torch.load(Path(run_dir) / WEIGHTS_FILE, map_location="cpu", weights_only=True)
