"""Two versions of the service side by side in one run: "before" (another checkout) and "after" (this one).

Starts both (same settings, same bundle, ``--spawn embedded`` or ``redis``) and the bare floor
app, then at each concurrency level drives before, after and the floor in turn with the same
client (``service.bench``), and scores the same requests with ONNX Runtime directly at each
version's mean batch size. Prints one table with the ratios. Example (the old code from a
temporary worktree)::

    git worktree add /tmp/before 63929e2
    python benchmarks/serve_before_after.py --before-src /tmp/before --model-dir BUNDLES \\
        --model demo-tabular --spawn redis --workers 1 --concurrency 1,8,32,64
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service import bench  # noqa: E402
from service.bundles.bundle import load_bundle  # noqa: E402


def _measure(executor: Any, args: argparse.Namespace, target: dict[str, Any], spec: Any, level: int) -> dict:
    before = bench._batch_totals(target["metrics"], args.model)
    cpu_before = bench._cpu_all(target["roles"])
    result = bench._level(executor, args, target["url"], spec, level)
    cpu_after = bench._cpu_all(target["roles"])
    after = bench._batch_totals(target["metrics"], args.model)
    batches = after[1] - before[1]
    result["mean_batch"] = (after[0] - before[0]) / batches if batches else float("nan")
    requests = max(1, result["requests"] + result["errors"])
    result["cpu_ms"] = sum(cpu_after[r] - cpu_before[r] for r in cpu_after) * 1000 / requests
    return result


def bundles_without_calibration(model_dir: Path) -> Path:
    """A copy of ``model_dir`` whose manifests name no calibration file, for a version that
    predates them (it refuses a bundle listing a file it does not know). Scores are unchanged;
    the older version answers without p-values, as it always did."""
    copy = Path(tempfile.mkdtemp(prefix="usfad-before-bundles-"))
    for bundle_dir in sorted(path for path in model_dir.iterdir() if (path / "manifest.json").is_file()):
        manifest = json.loads((bundle_dir / "manifest.json").read_text())
        calibration = (manifest.pop("calibration", None) or {}).get("file")
        files = manifest["files"]
        manifest["files"] = {name: digest for name, digest in files.items() if name != calibration}
        target = copy / bundle_dir.name
        target.mkdir()
        for name in manifest["files"]:
            shutil.copy2(bundle_dir / name, target / name)
        (target / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return copy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bench.add_arguments(parser)
    parser.add_argument("--before-src", type=Path, required=True, help="checkout of the older version")
    parser.add_argument("--before-port", type=int, default=8177)
    parser.add_argument(
        "--before-without",
        action="append",
        default=[],
        metavar="MODULE",
        help="hide an installed module from the older version (e.g. hiredis, which it did not have)",
    )
    parser.add_argument(
        "--before-without-calibration",
        action="store_true",
        help="serve the older version a copy of the bundles without their calibration files "
        "(for a version from before calibrated verdicts, which refuses them)",
    )
    args = parser.parse_args()
    before_model_dir = None
    if args.before_without_calibration:
        before_model_dir = bundles_without_calibration(args.model_dir)
    bundle = load_bundle(args.model_dir / args.model, device="cpu", threads=args.ort_threads)
    spec = bench.build_request(args, bundle.manifest)
    hidden = tempfile.mkdtemp(prefix="usfad-hidden-")
    for module in args.before_without:  # an import of it fails, as if it were not installed
        Path(hidden, f"{module}.py").write_text(f"raise ImportError('{module} is hidden')\n")
    processes: list[subprocess.Popen] = []
    targets: dict[str, dict[str, Any]] = {}
    executor = None
    rows = []
    try:
        for name, port, source in (("after", args.port, None), ("before", args.before_port, args.before_src)):
            model_dir = before_model_dir if source is not None and before_model_dir else args.model_dir
            spawn_args = argparse.Namespace(**{**vars(args), "port": port, "model_dir": model_dir})
            path = (hidden,) if source is not None else ()
            started, url, metrics, roles = bench._spawn(spawn_args, source=source, tag=name, path=path)
            processes += started
            targets[name] = {"url": url, "metrics": metrics, "roles": roles}
        floor, floor_url = bench._spawn_floor(args)
        processes.append(floor)
        targets["floor"] = {"url": floor_url, "metrics": [], "roles": {"floor": floor.pid}}
        executor = ProcessPoolExecutor(args.client_processes, mp_context=multiprocessing.get_context("spawn"))
        for url in [target["url"] for target in targets.values()]:
            bench._drive_processes(executor, args.client_processes, url, spec, 4 * args.client_processes, 1.0)
        for level in [int(item) for item in args.concurrency.split(",")] * max(1, args.rounds):
            row: dict[str, Any] = {"concurrency": level}
            for name in ("before", "after"):
                row[name] = _measure(executor, args, targets[name], spec, level)
            row["floor"] = _measure(executor, args, targets["floor"], spec, level)
            for name in ("before", "after"):
                batch = row[name]["mean_batch"]
                batch = max(1, round(batch)) if batch == batch else spec.items
                direct = bench.direct_rate_and_cpu(bundle, spec, batch)
                row[name]["direct"], row[name]["direct_cpu_ms"] = direct
            rows.append(row)
    finally:
        bench.shut_down(executor, processes)
        if args.spawn == "redis":
            for name in ("before", "after"):
                bench._delete_keys(args.redis_url, f"usfad-bench-{os.getpid()}{name}")
    _print(args, spec, bundle.manifest.kind, rows)
    return 0


def _print(args: argparse.Namespace, spec: Any, kind: str, rows: list[dict[str, Any]]) -> None:
    unit = "rows" if kind == "tabular" else "img"
    setup = f"spawn={args.spawn}" + (f", {args.workers} worker(s), {args.api_workers} API process(es)"
                                     if args.spawn == "redis" else "")
    what = f"{spec.items} row(s)/request" if kind == "tabular" else (
        f"{args.upload} {spec.content_type.split(';')[0]} ({len(spec.body)} bytes), map={args.map}")
    print(f"\nmodel {args.model}, {what}, {setup}, {args.duration:g} s per level and version, "
          f"max batch {args.max_batch}, max delay {args.max_delay_ms:g} ms, ORT threads {args.ort_threads}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"| concurrency | before {unit}/s | after {unit}/s | after ÷ before | p50 ms before / after "
          f"| p99 ms before / after | mean batch before / after | floor {unit}/s (p50 ms) | after ÷ floor "
          f"| after ÷ direct ORT at its batch | CPU ms per {unit[:-1] if unit == 'rows' else unit}: "
          "before / after / floor / direct ORT at after's batch |")
    print("|---:|---:|---:|---:|---|---|---|---|---:|---:|---|")
    for row in rows:
        b, a, f = row["before"], row["after"], row["floor"]
        for name, measured in (("before", b), ("after", a), ("floor", f)):
            if not measured["rows_per_s"]:
                sys.exit(f"{name} answered no request at concurrency {row['concurrency']}: see its log above")
        per = spec.items
        print(
            f"| {row['concurrency']} | {b['rows_per_s']:.0f} | {a['rows_per_s']:.0f} "
            f"| {a['rows_per_s'] / b['rows_per_s']:.2f}× | {b['p50_ms']:.2f} / {a['p50_ms']:.2f} "
            f"| {b['p99_ms']:.1f} / {a['p99_ms']:.1f} | {b['mean_batch']:.1f} / {a['mean_batch']:.1f} "
            f"| {f['rows_per_s']:.0f} ({f['p50_ms']:.2f}) | {a['rows_per_s'] / f['rows_per_s']:.0%} "
            f"| {a['rows_per_s'] / a['direct']:.0%} | {b['cpu_ms'] / per:.3f} / {a['cpu_ms'] / per:.3f} "
            f"/ {f['cpu_ms'] / per:.3f} / {a['direct_cpu_ms']:.3f} |"
        )


if __name__ == "__main__":
    sys.exit(main())
