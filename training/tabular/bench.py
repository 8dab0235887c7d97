"""``usfad bench tabular``: the paper's tabular benchmark over a folder of ADBench ``.npz`` files.

Protocol per (dataset, seed): random 70/30 split, anomalies removed from the training part,
features standardised with training statistics, AUC-ROC / average precision on the test
part. Optionally the training rows are capped (a random subset, the same for every model).
Every (dataset, model, seed) becomes one CSV row, written as soon as it finishes, so an
interrupted run resumes where it stopped. Failed runs (NaN/Inf loss or an exception) are
recorded with ``failed = True`` and never retried.
"""

from __future__ import annotations

import csv
import json
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training import progress
from training.tabular.classical import CLASSICAL_MODELS
from training.tabular.data import Standardizer, TabularData, load_npz, one_class_split

RESULTS_FILE = "results.csv"
SETTINGS_FILE = "bench.json"
COLUMNS: tuple[str, ...] = (
    "dataset",
    "model",
    "seed",
    "auc_roc",
    "average_precision",
    "train_seconds",
    "score_seconds",
    "epochs_run",
    "stop_reason",
    "failed",
    "error",
    "n_train",
    "n_train_available",
    "n_test",
    "n_test_anomalies",
    "features",
)


@dataclass(frozen=True)
class BenchProfile:
    """A named set of settings applied identically to every model."""

    name: str
    overrides: dict[str, Any]
    max_train_rows: int | None
    description: str


PROFILES: dict[str, BenchProfile] = {
    "paper": BenchProfile(
        "paper",
        {},
        None,
        "paper protocol: each model's full default configuration (flows: up to 200 epochs, "
        "batch 64, Adam 1e-4, early stop after 5 epochs without loss improvement > 1e-4)",
    ),
    "cpu": BenchProfile(
        "cpu",
        {"epochs": 12, "pretrain_epochs": 5, "max_seconds": 40.0},
        1500,
        "FAST CPU PROFILE - NOT the paper protocol: at most 12 epochs (5 of autoencoder "
        "pretraining), at most 40 s per training stage, at most 1500 training rows",
    ),
}


@dataclass
class BenchSettings:
    """Everything that defines a benchmark run; stored in ``OUT/bench.json`` for resuming."""

    data_dir: str
    datasets: list[str]
    models: list[str]
    seeds: list[int]
    profile: str
    description: str
    overrides: dict[str, Any] = field(default_factory=dict)
    max_train_rows: int | None = None
    test_fraction: float = 0.3

    def is_paper_protocol(self) -> bool:
        """True when nothing deviates from the paper's protocol."""
        return self.profile == "paper" and not self.overrides and self.max_train_rows is None


def list_datasets(data_dir: str | Path) -> list[Path]:
    """Every ``.npz`` file in ``data_dir``, sorted by name."""
    folder = Path(data_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"--data-dir {folder} is not a folder")
    files = sorted(folder.glob("*.npz"))
    if not files:
        raise FileNotFoundError(f"--data-dir {folder} holds no .npz files")
    return files


def _subsample(rows: np.ndarray, cap: int | None, seed: int) -> np.ndarray:
    if cap is None or len(rows) <= cap:
        return rows
    chosen = np.random.default_rng(seed + 7919).choice(len(rows), size=cap, replace=False)
    return rows[np.sort(chosen)]


@dataclass
class PreparedSplit:
    """Standardised train / test arrays of one (dataset, seed)."""

    x_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_train_available: int


def prepare_split(data: TabularData, seed: int, cap: int | None, test_fraction: float = 0.3) -> PreparedSplit:
    """Split, drop training anomalies, cap the training rows, standardise with training stats."""
    assert data.y is not None
    split = one_class_split(data.y, seed, test_fraction)
    train_rows = _subsample(split.train_index, cap, seed)
    standardizer = Standardizer.fit(data.x[train_rows])
    return PreparedSplit(
        standardizer.transform(data.x[train_rows]),
        standardizer.transform(data.x[split.test_index]),
        data.y[split.test_index],
        len(split.train_index),
    )


def run_one(model: str, prepared: PreparedSplit, seed: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """Train and score one model; returns the metric columns (failed runs included)."""
    import torch
    from sklearn.metrics import average_precision_score, roc_auc_score

    from training.tabular.classical import fit_classical, score_classical
    from training.tabular.families import fit_detector, resolve, score_rows

    row: dict[str, Any] = {"epochs_run": "", "stop_reason": "", "failed": False, "error": ""}
    started = time.perf_counter()
    try:
        if model in CLASSICAL_MODELS:
            fitted = fit_classical(model, prepared.x_train, seed)
            row["train_seconds"] = time.perf_counter() - started
            scoring_at = time.perf_counter()
            scores = score_classical(fitted, prepared.x_test)
            row["score_seconds"] = time.perf_counter() - scoring_at
        else:
            config, settings = resolve(model, prepared.x_train.shape[1], seed, overrides)
            outcome = fit_detector(model, torch.from_numpy(prepared.x_train), config, settings, seed)
            row["train_seconds"] = time.perf_counter() - started
            row["epochs_run"] = outcome.result.epochs_run
            row["stop_reason"] = outcome.result.stop_reason
            scoring_at = time.perf_counter()
            scores = score_rows(outcome.detector, torch.from_numpy(prepared.x_test))[0].numpy()
            row["score_seconds"] = time.perf_counter() - scoring_at
            if outcome.result.failed:
                row["failed"], row["error"] = True, outcome.result.stop_reason
                return row
        scores = np.asarray(scores, dtype=np.float64)
        if not np.isfinite(scores).all():
            row["failed"], row["error"] = True, f"{int((~np.isfinite(scores)).sum())} non-finite test scores"
            return row
        row["auc_roc"] = roc_auc_score(prepared.y_test, scores)
        row["average_precision"] = average_precision_score(prepared.y_test, scores)
    except Exception as error:  # recorded as a failed run, never hidden or retried
        row["failed"] = True
        row["error"] = f"{type(error).__name__}: {error}"
        row.setdefault("train_seconds", time.perf_counter() - started)
        traceback.print_exc(file=sys.stderr)
    return row


def results_file(shard: tuple[int, int] | None) -> str:
    """``results.csv``, or ``results-shard{k}of{n}.csv`` for shard ``k`` of ``n`` parallel processes."""
    return RESULTS_FILE if shard is None else f"results-shard{shard[0]}of{shard[1]}.csv"


def read_results(out_dir: str | Path) -> list[dict[str, str]]:
    """Rows of ``OUT/results.csv`` and of any shard files (empty when nothing ran yet)."""
    rows: list[dict[str, str]] = []
    for path in sorted(Path(out_dir).glob("results*.csv")):
        with path.open(newline="") as handle:
            rows.extend(csv.DictReader(handle))
    return rows


def _check_or_write_settings(out: Path, settings: BenchSettings) -> None:
    path = out / SETTINGS_FILE
    stored = asdict(settings)
    if path.is_file():
        previous = json.loads(path.read_text())
        for key in ("profile", "overrides", "max_train_rows", "test_fraction"):
            if previous.get(key) != stored[key]:
                raise ValueError(
                    f"{out} holds a run with {key}={previous.get(key)!r}, "
                    f"this one has {key}={stored[key]!r}; use another --out folder"
                )
        # Widening a resumed run (more datasets, models or seeds) keeps the old rows valid.
        for key in ("datasets", "models", "seeds"):
            old = list(previous.get(key, []))
            stored[key] = old + [item for item in stored[key] if item not in old]
    path.write_text(json.dumps(stored, indent=2))


def run_benchmark(
    settings: BenchSettings,
    out_dir: str | Path,
    log: Callable[[str], None] = progress.write,
    shard: tuple[int, int] | None = None,
) -> Path:
    """Run every missing (dataset, model, seed) row; returns the results CSV path.

    Order: seed by seed, then dataset by dataset, so a run cut short still covers every data
    set with the seeds it finished. ``shard = (k, n)`` runs every ``n``-th missing row starting
    at ``k`` into its own CSV, so ``n`` processes can share one output folder.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_or_write_settings(out, settings)
    done = {(r["dataset"], r["model"], int(r["seed"])) for r in read_results(out)}
    files = {Path(name).stem: Path(settings.data_dir) / name for name in settings.datasets}
    grid = [(seed, name, model) for seed in settings.seeds for name in files for model in settings.models]
    if shard is not None:
        # The assignment depends on the full grid only (not on what is done), so shards started
        # at different times never overlap; it rotates per (seed, dataset) to spread the models.
        width = len(settings.models)
        grid = [row for i, row in enumerate(grid) if (i + i // width) % shard[1] == shard[0]]
    todo = [(seed, name, model) for seed, name, model in grid if (name, model, seed) not in done]
    log(f"[bench tabular] profile: {settings.description}")
    if settings.max_train_rows is not None:
        log(f"[bench tabular] training rows capped at {settings.max_train_rows} (same cap for every model)")
    results_path = out / results_file(shard)
    log(f"[bench tabular] {len(done)} rows already done, {len(todo)} to run -> {results_path}")
    new_file = not results_path.is_file()
    cache: dict[str, TabularData] = {}
    started = time.perf_counter()
    import torch

    with results_path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        if new_file:
            writer.writeheader()
        prepared_key: tuple[str, int] | None = None
        prepared: PreparedSplit | None = None
        grid_bar = progress.bar(len(todo), "bench tabular", unit="run")
        for index, (seed, name, model) in enumerate(todo, start=1):
            if name not in cache:
                cache.clear()
                cache[name] = load_npz(files[name])
            if prepared_key != (name, seed):
                prepared = prepare_split(cache[name], seed, settings.max_train_rows, settings.test_fraction)
                prepared_key = (name, seed)
            assert prepared is not None
            torch.manual_seed(seed)
            metrics = run_one(model, prepared, seed, settings.overrides)
            row = {
                "dataset": name,
                "model": model,
                "seed": seed,
                "n_train": len(prepared.x_train),
                "n_train_available": prepared.n_train_available,
                "n_test": len(prepared.x_test),
                "n_test_anomalies": int(prepared.y_test.sum()),
                "features": prepared.x_train.shape[1],
                **metrics,
            }
            writer.writerow({key: _format(row.get(key, "")) for key in COLUMNS})
            handle.flush()
            elapsed = time.perf_counter() - started
            eta = elapsed / index * (len(todo) - index)
            status = (
                "FAILED " + row["error"] if row["failed"] else f"auc={row.get('auc_roc', float('nan')):.4f}"
            )
            log(
                f"[{index}/{len(todo)}] seed={seed} {name} {model}: {status} "
                f"({row.get('train_seconds', 0.0):.1f}s, eta {eta / 60:.1f} min)"
            )
            grid_bar.update(1)
        grid_bar.close()
    return results_path


def _format(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def select_datasets(files: Sequence[Path], names: Sequence[str] | None) -> list[str]:
    """File names to run: all of ``files``, or those whose stem is in ``names``."""
    if not names:
        return [f.name for f in files]
    stems = {f.stem: f.name for f in files}
    missing = [n for n in names if n not in stems]
    if missing:
        raise ValueError(f"--datasets: not in the data folder: {', '.join(missing)}")
    return [stems[n] for n in names]
