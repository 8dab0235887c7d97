"""CUDA vs CPU for exported bundles: parity, then throughput at batch 1, 8 and 32.

Run by benchmarks/gpu_check.sh (which installs the GPU extra and exports the two demo bundles);
by hand: ``python benchmarks/gpu_check.py --demo DIR [--cpu-only] [--seconds S]``.

Parity: the same inputs scored on the CUDA provider and on the CPU provider of the same
onnxruntime-gpu install. Scores and NLLs must agree within 1e-3 relative,
``|cuda - cpu| <= 1e-3 * max(|cpu|, 1)``; anomaly maps within 1e-2 of the CPU map's scale,
``max |cuda - cpu| <= 1e-2 * max(|cpu map|)``. Throughput: ``session.run`` on batches of real
inputs (breast-cancer rows, the demo's generated part images), items per second over about
``--seconds`` per setting after warm-up, CUDA and CPU measured side by side in one run.
With ``--cpu-only`` (no GPU here) the CUDA columns are skipped and the CPU ones still run, so the
script is exercised on machines without a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

BATCHES = (1, 8, 32)
SCORE_RTOL = 1e-3
MAP_TOL = 1e-2


def tabular_inputs(bundle_dir: Path, count: int) -> np.ndarray:
    """``count`` real rows (scikit-learn's breast-cancer data), float32 in the manifest's order."""
    from sklearn.datasets import load_breast_cancer

    rows = load_breast_cancer().data.astype(np.float32)
    return rows[np.arange(count) % len(rows)]


def image_inputs(bundle, demo: Path, count: int) -> np.ndarray:
    """``count`` of the demo's generated test images, decoded and resized as the service does."""
    from service.images import decode_image, resize_for_model

    paths = sorted((demo / "image-data").rglob("test/**/*.png"))
    if not paths:
        raise SystemExit(f"no demo test images under {demo / 'image-data'}")
    height, width = bundle.manifest.image_size
    mode = bundle.manifest.color_mode
    images = [resize_for_model(decode_image(p.read_bytes(), mode), height, width) for p in paths[:count]]
    return np.stack([images[i % len(images)] for i in range(count)])


def throughput(bundle, inputs: np.ndarray, batch: int, seconds: float) -> float:
    """Items per second of ``bundle.run`` on batches of ``batch`` inputs."""
    data = inputs[:batch]
    for _ in range(3):
        bundle.run(data)
    runs, started = 0, time.perf_counter()
    while True:
        bundle.run(data)
        runs += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and runs >= 5:
            return runs * batch / elapsed


def parity(cpu, cuda, inputs: np.ndarray) -> dict[str, float]:
    """Worst relative score / NLL difference and worst map difference (scaled) CUDA vs CPU."""
    a, b = cpu.run(inputs), cuda.run(inputs)
    report = {}
    for key in ("score", "nll"):
        x, y = getattr(a, key), getattr(b, key)
        report[f"{key}_rel"] = float(np.max(np.abs(x - y) / np.maximum(np.abs(x), 1.0)))
    if a.anomaly_map is not None:
        scale = float(np.max(np.abs(a.anomaly_map))) or 1.0
        report["map_rel"] = float(np.max(np.abs(a.anomaly_map - b.anomaly_map)) / scale)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, required=True, help="folder of `python -m training.demo --out`")
    parser.add_argument("--cpu-only", action="store_true", help="no GPU: CPU parts only")
    parser.add_argument("--seconds", type=float, default=2.0, help="time per throughput setting")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument(
        "--models", nargs="+", default=["demo-tabular", "demo-image"], help="bundles under DEMO/bundles"
    )
    args = parser.parse_args(argv)

    import onnxruntime as ort

    from service.bundles.bundle import load_bundle
    from service.errors import BundleError

    providers = ort.get_available_providers()
    print(f"onnxruntime {ort.__version__}, providers {providers}, device {ort.get_device()}")
    if not args.cpu_only and "CUDAExecutionProvider" not in providers:
        print("error: this onnxruntime has no CUDA provider (is onnxruntime-gpu the only runtime?)")
        return 1
    failures, results = [], {"onnxruntime": ort.__version__, "providers": providers, "models": {}}
    for name in args.models:
        bundle_dir = args.demo / "bundles" / name
        cpu = load_bundle(bundle_dir, device="cpu")
        cuda = None
        if not args.cpu_only:
            try:
                cuda = load_bundle(bundle_dir, device="cuda")
            except BundleError as error:  # CUDA listed but cannot start (driver, libraries)
                failures.append(f"{name}: {error}")
        if cuda is not None and cuda.providers[0] != "CUDAExecutionProvider":
            failures.append(f"{name}: session providers {cuda.providers}")
            cuda = None
        if cpu.manifest.kind == "image":
            inputs = image_inputs(cpu, args.demo, max(BATCHES))
        else:
            inputs = tabular_inputs(bundle_dir, max(BATCHES))
        entry: dict = {"kind": cpu.manifest.kind, "throughput": {}}
        reference = cuda if cuda is not None else cpu  # CPU vs CPU still runs the comparison code
        entry["parity"] = parity(cpu, reference, inputs)
        entry["parity_of"] = "CUDA vs CPU" if cuda is not None else "CPU vs CPU (no CUDA session)"
        limits = {"score_rel": SCORE_RTOL, "nll_rel": SCORE_RTOL, "map_rel": MAP_TOL}
        for key, value in entry["parity"].items():
            if value > limits[key]:
                failures.append(f"{name}: {key} = {value:.2e} > {limits[key]:.0e}")
        for batch in BATCHES:
            row = {"cpu": throughput(cpu, inputs, batch, args.seconds)}
            if cuda is not None:
                row["cuda"] = throughput(cuda, inputs, batch, args.seconds)
                row["cuda_over_cpu"] = row["cuda"] / row["cpu"]
            entry["throughput"][batch] = row
        results["models"][name] = entry

    print("\nparity:")
    for name, entry in results["models"].items():
        values = ", ".join(f"{k} {v:.2e}" for k, v in entry["parity"].items())
        print(f"  {name} ({entry['parity_of']}): {values}")
    print("\n| model | batch | CPU items/s | CUDA items/s | CUDA ÷ CPU |\n|---|---:|---:|---:|---:|")
    for name, entry in results["models"].items():
        for batch, row in entry["throughput"].items():
            cuda_rate = f"{row['cuda']:.0f}" if "cuda" in row else "—"
            ratio = f"{row['cuda_over_cpu']:.2f}" if "cuda" in row else "—"
            print(f"| {name} | {batch} | {row['cpu']:.0f} | {cuda_rate} | {ratio} |")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    for failure in failures:
        print(f"FAIL {failure}")
    print("gpu_check: " + ("FAILED" if failures else "passed"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
