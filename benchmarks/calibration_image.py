"""False-alarm rates of image models at requested fpr on Magnetic Tile's test good images.

One run per family (seed 0, the CPU profile): ``train_image_run`` holds out 15 % of the good
training images for calibration; the test good images are then scored with the eager scorer
(decoded and resized with the service's functions) and the conformal verdict ``p <= α`` is
compared with the old rule (the 99 % / 95 % quantile of the same calibration scores).

    nice -n 10 python benchmarks/calibration_image.py --families fastflow --out bench-calibration-image

``--runs DIR`` scores the run directories already under ``DIR`` instead (e.g. the ``runs/`` of a
``usfad bench image`` grid: every family, flow and seed), training nothing:

    python benchmarks/calibration_image.py --runs bench-image/runs --out bench-calibration-image
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from service.calibration import certifiable, flag_at_fpr, p_values
from service.images import decode_image, resize_for_model
from training.calibration import read_run_calibration
from training.calibration_bench import binomial_interval, conformal_interval
from training.image.run import load_image_scorer
from training.image.train import train_image_run
from training.runs import read_run

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "images" / "magnetic_tile"


def _runs(args: argparse.Namespace):  # noqa: ANN202 - a generator of tuples, local use
    """``(label, start time, run record, calibration scores, eager scorer)`` per run."""
    if args.runs:
        for run_json in sorted(Path(args.runs).glob("**/run.json")):
            started = time.time()
            run = read_run(run_json.parent)
            if run.get("kind") != "image" or "calibration" not in run:
                continue
            label = f"{run['family']}-{run['flow']} seed {run.get('seed', 0)}"
            calibration = read_run_calibration(run_json.parent, run)
            yield label, started, run, calibration, load_image_scorer(run_json.parent, run)
        return
    for family in args.families.split(","):
        started = time.time()
        with tempfile.TemporaryDirectory() as folder:
            run_dir = train_image_run(
                args.data, family, args.flow, folder, profile="cpu", seed=0, max_test_images=8
            )
            run = read_run(run_dir)
            calibration = read_run_calibration(run_dir, run)
            scorer = load_image_scorer(run_dir, run)
        yield f"{family}-{args.flow}", started, run, calibration, scorer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--families", default="fastflow,cflow,uflow")
    parser.add_argument("--flow", default="usf")
    parser.add_argument("--out", default="bench-calibration-image")
    parser.add_argument("--runs", default=None, help="score these finished run directories instead")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    good_folder = Path(args.data) / "test" / "good"
    goods = sorted(p for p in good_folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    rows = []
    for label, started, run, calibration, scorer in _runs(args):
        height, width = run["input"]["height"], run["input"]["width"]
        scores = []
        with torch.inference_mode():
            for start in range(0, len(goods), 16):
                batch = np.stack(
                    [
                        resize_for_model(decode_image(p.read_bytes(), "rgb", "image"), height, width)
                        for p in goods[start : start + 16]
                    ]
                )
                scores.append(scorer(torch.from_numpy(batch))[0].numpy())
        score = np.concatenate(scores).astype(np.float64)
        n, m = calibration.size, score.size
        p = p_values(calibration, score)
        row = {"family": label, "n_cal": n, "test_good": m}
        row["seconds"] = round(time.time() - started, 1)
        for rate in (0.01, 0.05):
            tag = int(rate * 100)
            low, high = binomial_interval(rate, m)
            if certifiable(rate, n):
                observed = float(flag_at_fpr(p, rate).mean())
                beta_low, beta_high = conformal_interval(rate, n, m)
                row[f"conformal_{tag}"] = observed
                row[f"binomial_hit_{tag}"] = low <= observed <= high
                row[f"beta_binomial_hit_{tag}"] = beta_low <= observed <= beta_high
            quantile = float(np.mean(~(score <= np.percentile(calibration, 100 * (1 - rate)))))
            row[f"quantile_{tag}"] = quantile
            row[f"quantile_binomial_hit_{tag}"] = low <= quantile <= high
        rows.append(row)
        print(json.dumps(row), flush=True)
        (out / "results.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
