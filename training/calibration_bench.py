"""``usfad bench calibration``: do the false-alarm rates the service promises hold on test normals?

For every ADBench set × seed × family: the paper's 70/30 split (anomalies dropped from the
training part); the normal training rows are shuffled into a *fit* part (at most
``--max-fit-rows``) and a *calibration* part (the rest, at most ``--max-cal-rows``, at least 20 %)
that ``train_tabular_run`` receives as ``x_val``: it never trains on it, and tabular early stopping
watches the training loss. The test normals are then scored, and per requested rate α (1 %, 5 %):

- conformal: the share of test normals with ``p_value ≤ α`` (``service.calibration``), and
  whether it lies in the binomial 99 % interval of α for that many test normals;
- quantile rule (the previous bundles' threshold): the share above the ``1 − α`` quantile of the
  same calibration scores (99th percentile for α = 1 %);
- for flows with a χ² law: mean ``|p_analytic − p_conformal|`` on the test normals, the share
  ``p_analytic ≤ 1 %`` flags, and the KS distance of the calibration scores from the law.
"""

from __future__ import annotations

import argparse
import csv
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from service.analytic import analytic_p_values, chi2_ks
from service.calibration import certifiable, flag_at_fpr, p_values
from training import progress

RATES = (0.01, 0.05)
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "adbench"
FIELDS = [
    "dataset",
    "family",
    "seed",
    "n_fit",
    "n_cal",
    "n_test_normal",
    *[
        f"{kind}_{int(rate * 100)}"
        for rate in RATES
        for kind in ("conformal", "hit", "bbhit", "quantile", "qhit")
    ],
    "analytic_mean_abs_diff",
    "analytic_flag_1",
    "ks_distance",
    "seconds",
    "error",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``usfad bench calibration``."""
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA), help="folder of ADBench .npz files")
    parser.add_argument("--datasets", nargs="*", default=None, help="file stems (default: all)")
    parser.add_argument("--models", default="usflow,deep_svdd", help="comma-separated tabular families")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--profile", default="cpu", choices=("cpu", "paper"), help="tabular bench profile")
    parser.add_argument("--max-fit-rows", type=int, default=512, help="cap on the rows a model trains on")
    parser.add_argument("--max-cal-rows", type=int, default=1000, help="cap on the calibration rows")
    parser.add_argument("--max-test-rows", type=int, default=20000, help="cap on scored test normals")
    parser.add_argument("--out", default="bench-calibration", help="folder for results.csv and report.md")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite OUT/report.md from OUT/results.csv, train nothing"
    )


def binomial_interval(rate: float, m: int, level: float = 0.99) -> tuple[float, float]:
    """Central ``level`` interval of ``Binomial(m, rate) / m``."""
    from scipy.stats import binom

    tail = (1 - level) / 2
    return float(binom.ppf(tail, m, rate)) / m, float(binom.ppf(1 - tail, m, rate)) / m


def conformal_interval(rate: float, n: int, m: int, level: float = 0.99) -> tuple[float, float]:
    """Central ``level`` interval of the observed rate on ``m`` test normals *including* the
    calibration draw: with ``k = ⌊α(n + 1)⌋`` the conditional false-alarm rate is
    ``Beta(k, n + 1 − k)``, so the count is ``BetaBinomial(m, k, n + 1 − k)``."""
    from scipy.stats import betabinom

    k = int(np.floor(rate * (n + 1) * (1 + 1e-9)))
    tail = (1 - level) / 2
    law = betabinom(m, k, n + 1 - k)
    return float(law.ppf(tail)) / m, float(law.ppf(1 - tail)) / m


def _split(y: np.ndarray, seed: int, max_fit: int, max_cal: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from training.tabular.data import one_class_split

    split = one_class_split(y, seed)
    normal = np.random.default_rng([seed, 31]).permutation(split.train_index)
    n_cal = min(max_cal, max(int(round(0.2 * len(normal))), len(normal) - max_fit))
    return normal[n_cal : n_cal + max_fit], normal[:n_cal], split.test_index


def one_run(x: np.ndarray, y: np.ndarray, family: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train, calibrate and measure one (data set, family, seed)."""
    import torch

    from training.calibration import analytic_law, read_run_calibration
    from training.runs import read_run
    from training.tabular.bench import PROFILES
    from training.tabular.run import load_tabular_scorer
    from training.tabular.train import train_tabular_run

    fit_rows, cal_rows, test_rows = _split(y, seed, args.max_fit_rows, args.max_cal_rows)
    test_normal = test_rows[y[test_rows] == 0][: args.max_test_rows]
    row: dict[str, Any] = {"n_fit": len(fit_rows), "n_cal": len(cal_rows), "n_test_normal": len(test_normal)}
    with tempfile.TemporaryDirectory(prefix="usfad-calbench-") as folder:
        run_dir = train_tabular_run(
            x[fit_rows],
            family,
            folder,
            seed=seed,
            overrides=dict(PROFILES[args.profile].overrides),
            x_val=x[cal_rows],
        )
        run = read_run(run_dir)
        calibration = read_run_calibration(run_dir, run)
        scorer = load_tabular_scorer(run_dir, run)
        with torch.inference_mode():
            scores = torch.cat(
                [
                    scorer(torch.from_numpy(x[test_normal[i : i + 4096]].astype(np.float32)))[0]
                    for i in range(0, len(test_normal), 4096)
                ]
            ).numpy()
    assert calibration is not None
    n = calibration.size
    p = p_values(calibration, scores)
    m = len(scores)
    for rate in RATES:
        tag = int(rate * 100)
        low, high = binomial_interval(rate, m)
        if certifiable(rate, n):
            observed = float(flag_at_fpr(p, rate).mean())
            row[f"conformal_{tag}"], row[f"hit_{tag}"] = observed, int(low <= observed <= high)
            beta_low, beta_high = conformal_interval(rate, n, m)
            row[f"bbhit_{tag}"] = int(beta_low <= observed <= beta_high)
        else:
            row[f"conformal_{tag}"], row[f"hit_{tag}"], row[f"bbhit_{tag}"] = "", "", ""
        cut = np.percentile(calibration, 100 * (1 - rate))
        quantile = float(np.mean(~(scores <= cut)))
        row[f"quantile_{tag}"], row[f"qhit_{tag}"] = quantile, int(low <= quantile <= high)
    law = analytic_law(run, run["config"])
    if law is not None:
        analytic = analytic_p_values(scores, law["dof"], law["scale"])
        row["analytic_mean_abs_diff"] = float(np.mean(np.abs(analytic - p)))
        row["analytic_flag_1"] = float(np.mean(analytic <= 0.01))
        row["ks_distance"] = chi2_ks(calibration, law["dof"], law["scale"])["ks_distance"]
    return row


def _mean(values: list[float]) -> str:
    return f"{np.mean(values):.4f}" if values else "–"


def _bbhit(row: dict[str, Any], tag: int) -> int:
    low, high = conformal_interval(tag / 100, int(row["n_cal"]), int(row["n_test_normal"]))
    return int(low <= float(row[f"conformal_{tag}"]) <= high)


def read_results(path: Path) -> list[dict[str, Any]]:
    """``results.csv`` back as rows with numbers (the calibration-aware hits recomputed if absent)."""
    rows = []
    with path.open(newline="") as handle:
        for raw in csv.DictReader(handle):
            row: dict[str, Any] = dict(raw)
            for key, value in raw.items():
                if key not in ("dataset", "family", "error") and value not in ("", None):
                    row[key] = float(value)
            for tag in (1, 5):
                if row.get(f"bbhit_{tag}", "") in ("", None) and row.get(f"conformal_{tag}", "") != "":
                    row[f"bbhit_{tag}"] = _bbhit(row, tag)
            rows.append(row)
    return rows


def report(rows: list[dict[str, Any]], header: str) -> str:
    """Markdown: per data set and family, means over seeds, then the criteria over all runs."""
    lines = [header, ""]
    for family in sorted({r["family"] for r in rows}):
        mine = [r for r in rows if r["family"] == family and not r["error"]]
        lines += [
            f"**{family}**: means over seeds of the observed false-alarm rate on the test normals; "
            "hits = runs inside the binomial 99 % interval of α (test sampling only) / inside the "
            "beta-binomial 99 % interval (test sampling and the calibration draw, what split "
            "conformal promises); pct = the old rule, the (1 − α) quantile of the same calibration scores.",
            "",
            "| data set | n cal | test normals | 1 %: conformal | hits binom / beta-binom | 99th pct | hits "
            "| 5 %: conformal | hits binom / beta-binom | 95th pct | hits | mean abs(p_chi2 − p) "
            "| chi2 flags at 1 % | KS |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for dataset in sorted({r["dataset"] for r in mine}, key=lambda s: int(s.split("_")[0])):
            runs = [r for r in mine if r["dataset"] == dataset]
            cells = [dataset, f"{np.mean([r['n_cal'] for r in runs]):.0f}"]
            cells.append(f"{np.mean([r['n_test_normal'] for r in runs]):.0f}")
            for tag in (1, 5):
                certified = [r for r in runs if r[f"conformal_{tag}"] != ""]
                cells.append(_mean([r[f"conformal_{tag}"] for r in certified]) if certified else "n/a")
                hits = sum(int(r[f"hit_{tag}"]) for r in certified)
                bbhits = sum(int(r[f"bbhit_{tag}"]) for r in certified)
                cells.append(f"{hits}/{len(certified)} / {bbhits}/{len(certified)}" if certified else "–")
                cells.append(_mean([r[f"quantile_{tag}"] for r in runs]))
                cells.append(f"{sum(int(r[f'qhit_{tag}']) for r in runs)}/{len(runs)}")
            for key in ("analytic_mean_abs_diff", "analytic_flag_1", "ks_distance"):
                values = [r[key] for r in runs if r.get(key, "") != ""]
                cells.append(_mean(values) if values else "–")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        for tag in (1, 5):
            rate = tag / 100
            certified = [r for r in mine if r[f"conformal_{tag}"] != ""]
            if certified:
                hits = np.mean([r[f"hit_{tag}"] for r in certified])
                bbhits = np.mean([r[f"bbhit_{tag}"] for r in certified])
                mean = np.mean([r[f"conformal_{tag}"] for r in certified])
                qhits = np.mean([r[f"qhit_{tag}"] for r in mine])
                qmean = np.mean([r[f"quantile_{tag}"] for r in mine])
                lines.append(
                    f"- α = {tag} %, conformal, {len(certified)} certifiable runs (n ≥ {100 // tag - 1}): "
                    f"mean observed {mean:.4f} ({mean / rate - 1:+.0%} from α); inside the binomial "
                    f"interval {hits:.0%}, inside the beta-binomial interval {bbhits:.0%}. Quantile "
                    f"rule, {len(mine)} runs: mean {qmean:.4f} ({qmean / rate - 1:+.0%}), "
                    f"binomial {qhits:.0%}"
                )
        uncertified = [r for r in mine if r["conformal_1"] == ""]
        if uncertified:
            lines.append(
                f"- α = 1 % is not certifiable (n < 99) in {len(uncertified)} runs: "
                "the service answers 422 there"
            )
        failed = [r for r in rows if r["family"] == family and r["error"]]
        if failed:
            names = "; ".join(f"{r['dataset']} s{int(r['seed'])}" for r in failed)
            lines.append(f"- {len(failed)} runs failed: {names}")
        lines.append("")
    return "\n".join(lines)


def run_calibration_bench(args: argparse.Namespace) -> int:
    """Run the grid, append to ``OUT/results.csv`` as it goes, write ``OUT/report.md``."""
    import torch

    from training.tabular.data import load_npz

    out = Path(args.out)
    if args.report_only:
        text = report(read_results(out / "results.csv"), f"(from {out / 'results.csv'})")
        (out / "report.md").write_text(text)
        print(text)
        return 0
    torch.set_num_threads(1)
    files = sorted(Path(args.data_dir).glob("*.npz"), key=lambda p: int(p.stem.split("_")[0]))
    if args.datasets:
        files = [f for f in files if f.stem in set(args.datasets)]
    families = [m.strip() for m in args.models.split(",") if m.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    started = time.time()
    with (out / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS)
        writer.writeheader()
        grid_bar = progress.bar(len(files) * len(families) * len(seeds), "bench calibration", unit="run")
        for file in files:
            data = load_npz(file)
            assert data.y is not None
            for family in families:
                for seed in seeds:
                    row: dict[str, Any] = {"dataset": file.stem, "family": family, "seed": seed, "error": ""}
                    begun = time.time()
                    try:
                        row.update(one_run(data.x, data.y, family, seed, args))
                    except Exception as error:  # noqa: BLE001 - a failed run is reported, the grid goes on
                        row["error"] = f"{type(error).__name__}: {str(error)[:120]}"
                    row["seconds"] = round(time.time() - begun, 1)
                    rows.append(row)
                    writer.writerow({key: row.get(key, "") for key in FIELDS})
                    handle.flush()
                    done = f"{file.stem} {family} {seed}: {row['seconds']} s {row['error']}"
                    progress.write(f"[bench calibration] {done}")
                    grid_bar.update(1)
        grid_bar.close()
    header = (
        f"`usfad bench calibration --profile {args.profile} --max-fit-rows {args.max_fit_rows} "
        f"--max-cal-rows {args.max_cal_rows} --models {args.models} --seeds {args.seeds}`, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, {platform.node()}, "
        f"{time.time() - started:.0f} s"
    )
    (out / "report.md").write_text(report(rows, header))
    print(report(rows, header))
    print(f"wrote {out}: results.csv, report.md")
    return 0
