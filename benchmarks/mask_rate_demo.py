"""Family-wise false-alarm rate of ``map=mask`` on the demo image model, over calibration draws.

Trains the demo FastFlow-USF (``train_demo_image_run``, the CPU default: score = top-1 % mean of
the raw map, returned map smoothed with σ = 4), exports it, and scores ``--images`` fresh good
demo parts with the exported bundle (ONNX Runtime, as the service scores them). Each of
``--draws`` random splits takes ``--n-cal`` of them as calibration images and the rest as
held-out good images, and reports the share of held-out images with *any* masked pixel:

- calibrated (what ``map=mask`` does now): the map cut at the conformal quantile of the
  calibration images' returned-map maxima (``service.calibration.map_cut``);
- old rule (before): the map cut at the image *score*'s conformal cut (``score_cut``).

    nice -n 10 python benchmarks/mask_rate_demo.py --out bench-mask-demo
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from service.bundles.bundle import load_bundle
from service.calibration import map_cut, map_maxima, score_cut, sorted_scores
from training.export.writer import export_bundle
from training.image.demo import train_demo_image_run, write_demo_goods

RATES = (0.01, 0.05, 0.1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--n-cal", type=int, default=499)
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--out", default="bench-mask-demo")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        run_dir = train_demo_image_run(root / "runs" / "demo-image", data_root=root / "data")
        export_bundle(run_dir, root / "bundles" / "demo-image", ("onnx",), "demo-image")
        bundle = load_bundle(root / "bundles" / "demo-image", device="cpu", threads=1)
        paths = write_demo_goods(root / "goods", args.images, seed=3)
        scores, maxima = [], []
        for start in range(0, len(paths), 32):
            batch = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths[start : start + 32]])
            outputs = bundle.score_images(batch)
            scores.append(outputs.score.astype(np.float64))
            maxima.append(map_maxima(outputs.anomaly_map))
    scores_all, maxima_all = np.concatenate(scores), np.concatenate(maxima)
    rng = np.random.default_rng(0)
    shares: dict[str, list[float]] = {f"{kind}@{r}": [] for kind in ("calibrated", "old") for r in RATES}
    for _ in range(args.draws):
        order = rng.permutation(len(paths))
        cal, held = order[: args.n_cal], order[args.n_cal :]
        cal_scores, cal_max = sorted_scores(scores_all[cal]), sorted_scores(maxima_all[cal])
        for rate in RATES:
            shares[f"calibrated@{rate}"].append(float(np.mean(maxima_all[held] > map_cut(cal_max, rate))))
            shares[f"old@{rate}"].append(float(np.mean(maxima_all[held] > score_cut(cal_scores, rate))))
    held_n = len(paths) - args.n_cal
    rows = []
    for rate in RATES:
        k = math.floor(rate * (args.n_cal + 1))
        row = {
            "rate": rate,
            "expected": k / (args.n_cal + 1),
            "calibrated_mean": float(np.mean(shares[f"calibrated@{rate}"])),
            "calibrated_max": float(np.max(shares[f"calibrated@{rate}"])),
            "old_mean": float(np.mean(shares[f"old@{rate}"])),
            "old_max": float(np.max(shares[f"old@{rate}"])),
        }
        rows.append(row)
        print(
            f"fpr {rate:g}: calibrated mask rate mean {row['calibrated_mean']:.4f} "
            f"(max {row['calibrated_max']:.4f}), old rule mean {row['old_mean']:.4f} "
            f"(max {row['old_max']:.4f}); expected {row['expected']:.4f}"
        )
    summary = {
        "images": args.images,
        "n_cal": args.n_cal,
        "held_out": held_n,
        "draws": args.draws,
        "seconds": round(time.time() - started, 1),
        "rows": rows,
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{args.draws} draws of {args.n_cal} calibration / {held_n} held-out good images")
    print(f"{summary['seconds']} s")


if __name__ == "__main__":
    main()
