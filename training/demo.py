"""Demo bundles for ``usfad serve --demo``: trained once on data every machine has, then cached.

- ``demo-tabular``: a USFlow on scikit-learn's bundled breast-cancer data (no download);
  trained on benign tumours, so malignant ones are the anomalies.
- ``demo-image``: the image area's small demo model on images generated in code
  (``training.image.demo``), when that module is available.

Run as ``python -m training.demo --out CACHE`` (``usfad serve --demo`` does this in a process
of its own, so the serving process never imports torch). A valid cache is reused.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

DEMO_FORMAT = 1
TABULAR_NAME = "demo-tabular"
IMAGE_NAME = "demo-image"
STAMP_FILE = "demo.json"
# Small and quick (seconds on a laptop CPU); early stopping on the training loss ends it sooner.
TABULAR_OVERRIDES: dict[str, Any] = {
    "n_blocks": 4,
    "hidden": [64, 64],
    "epochs": 60,
    "lr": 1e-3,
    "batch_size": 32,
    "max_seconds": 45.0,
}


def _feature_names(raw: list[str]) -> list[str]:
    """``"mean radius"`` → ``"mean_radius"`` (JSON keys without spaces are easier to type)."""
    return [name.replace(" ", "_") for name in raw]


def build_tabular(out: Path, seed: int = 0) -> dict[str, Any]:
    """Train and export ``demo-tabular``; write two example request bodies (benign / malignant)."""
    from sklearn.datasets import load_breast_cancer

    from training.export.writer import export_bundle
    from training.tabular.train import train_tabular_run

    data = load_breast_cancer()
    x, y = data.data.astype(np.float64), data.target  # target 1 = benign (normal), 0 = malignant
    rng = np.random.default_rng(seed)
    benign = rng.permutation(np.flatnonzero(y == 1))
    malignant = np.flatnonzero(y == 0)
    names = _feature_names(list(data.feature_names))
    train_rows = benign[:300]
    run_dir = train_tabular_run(
        x[train_rows],
        "usflow",
        out / "runs" / TABULAR_NAME,
        feature_names=names,
        seed=seed,
        overrides=dict(TABULAR_OVERRIDES),
        source="scikit-learn load_breast_cancer(), benign rows",
    )
    bundle_dir = out / "bundles" / TABULAR_NAME
    manifest = export_bundle(run_dir, bundle_dir, ("onnx",), TABULAR_NAME, overwrite=True)
    # Score the rows never used for training with the served graph (the service's own loader).
    from sklearn.metrics import roc_auc_score

    from service.bundles.bundle import load_bundle

    bundle = load_bundle(bundle_dir, device="cpu")
    held_out = np.concatenate([benign[300:], malignant])
    scores = bundle.score_tabular(x[held_out].astype(np.float32)).score
    labels = (y[held_out] == 0).astype(int)
    manifest["demo_auroc"] = float(roc_auc_score(labels, scores))
    print(f"demo: {TABULAR_NAME} AUROC on held-out benign vs malignant rows = {manifest['demo_auroc']:.3f}")
    # Example rows: the first two held-out benign rows under the threshold and the first two
    # malignant rows over it, so the example shows both answers.
    flagged = scores > manifest["threshold"]["score"]
    normal_rows = held_out[(labels == 0) & ~flagged][:2]
    anomalous_rows = held_out[(labels == 1) & flagged][:2]
    examples = out / "examples"
    examples.mkdir(parents=True, exist_ok=True)
    body = {"model": TABULAR_NAME, "rows": x[np.concatenate([normal_rows, anomalous_rows])].round(6).tolist()}
    (examples / "tabular.json").write_text(json.dumps(body))
    return manifest


def build_image(out: Path) -> dict[str, Any] | None:
    """Train and export ``demo-image`` with the image area's demo functions (``None`` if absent)."""
    try:
        from training.image.demo import DEFECTS, DEMO_CATEGORY, train_demo_image_run
    except ImportError:
        print("demo: training.image.demo is not available; serving the tabular demo only", file=sys.stderr)
        return None
    from training.export.writer import export_bundle

    data_root = out / "image-data"
    run_dir = train_demo_image_run(out / "runs" / IMAGE_NAME, data_root=data_root)
    manifest = export_bundle(run_dir, out / "bundles" / IMAGE_NAME, ("onnx",), IMAGE_NAME, overwrite=True)
    test = data_root / DEMO_CATEGORY / "test"
    examples = out / "examples"
    examples.mkdir(parents=True, exist_ok=True)
    # As for the tabular example: the first good image under the threshold and the first defective
    # image over it (if the model flags none, the first of each), scored by the served graph.
    good = sorted((test / "good").glob("*.png"))
    defective = sorted(path for kind in DEFECTS for path in (test / kind).glob("*.png"))
    scores = _image_scores(out / "bundles" / IMAGE_NAME, good + defective)
    labels = np.array([0] * len(good) + [1] * len(defective))
    from sklearn.metrics import roc_auc_score

    print(f"demo: {IMAGE_NAME} image AUROC on the generated test set = {roc_auc_score(labels, scores):.3f}")
    flagged = scores > manifest["threshold"]["score"]
    good_pick = next((p for p, f in zip(good, flagged[: len(good)], strict=True) if not f), good[0])
    defect_pick = next((p for p, f in zip(defective, flagged[len(good) :], strict=True) if f), defective[0])
    shutil.copyfile(good_pick, examples / "image-good.png")
    shutil.copyfile(defect_pick, examples / "image-defect.png")
    return manifest


def _image_scores(bundle_dir: Path, paths: list[Path]) -> np.ndarray:
    """Image scores from the exported graph, decoded and resized exactly as the service does."""
    from service.bundles.bundle import load_bundle
    from service.images import decode_image, resize_for_model

    bundle = load_bundle(bundle_dir, device="cpu")
    height, width = bundle.manifest.image_size
    mode = bundle.manifest.color_mode
    batch = np.stack([resize_for_model(decode_image(p.read_bytes(), mode), height, width) for p in paths])
    return bundle.score_images(batch).score


def cache_is_valid(out: Path) -> bool:
    """Whether ``out`` holds a finished demo whose bundles all pass their checksums."""
    from service.bundles.manifest import read_manifest, verify_files
    from service.errors import BundleError

    stamp = out / STAMP_FILE
    if not stamp.is_file():
        return False
    try:
        recorded = json.loads(stamp.read_text())
        if recorded.get("format") != DEMO_FORMAT:
            return False
        for name in recorded["models"]:
            bundle = out / "bundles" / name
            verify_files(bundle, read_manifest(bundle))
    except (BundleError, OSError, KeyError, ValueError):
        return False
    return (out / "examples" / "tabular.json").is_file()


def build_demo(out: Path, force: bool = False) -> list[str]:
    """Build (or reuse) the demo in ``out``; returns the served model names."""
    if not force and cache_is_valid(out):
        models = json.loads((out / STAMP_FILE).read_text())["models"]
        print(f"demo: reusing {out} ({', '.join(models)})")
        return models
    import torch

    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    started = time.perf_counter()
    (out / STAMP_FILE).unlink(missing_ok=True)
    models = [build_tabular(out)["name"]]
    print(f"demo: {TABULAR_NAME} trained and exported ({time.perf_counter() - started:.0f} s)")
    image = build_image(out)
    if image is not None:
        models.append(image["name"])
        print(f"demo: {IMAGE_NAME} trained and exported ({time.perf_counter() - started:.0f} s)")
    (out / STAMP_FILE).write_text(json.dumps({"format": DEMO_FORMAT, "models": models}))
    return models


def curl_examples(out: Path, base_url: str) -> list[str]:
    """Ready-to-paste curl commands for the demo models in ``out``."""
    body = (out / "examples" / "tabular.json").read_text()
    lines = [
        "# tabular: 2 held-out benign tumours, then 2 malignant ones (anomalies)",
        f"curl -s -X POST {base_url}/score/tabular -H 'content-type: application/json' "
        f"-d {shlex.quote(body)}",
    ]
    image = out / "examples" / "image-defect.png"
    if image.is_file():
        lines += [
            "# image: a defective part: score, is_anomaly, anomaly map as a PNG heat map (base64)",
            f"curl -s -X POST '{base_url}/score/image?model={IMAGE_NAME}&map=png' "
            f"-F images=@{shlex.quote(str(image))}",
        ]
    return lines


def main(argv: list[str] | None = None) -> int:
    """``python -m training.demo --out CACHE [--force]``."""
    parser = argparse.ArgumentParser(prog="python -m training.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="cache folder")
    parser.add_argument("--force", action="store_true", help="rebuild even if the cache is valid")
    args = parser.parse_args(argv)
    build_demo(args.out, args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
