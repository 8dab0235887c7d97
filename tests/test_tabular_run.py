"""Run directories of tabular models: saving, reloading, thresholds, failures, the train CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.flows import USFlow
from tests.tabular_helpers import TINY, TINY_FLOW, cardio
from training.cli import main
from training.runs import load_scorer, read_run
from training.tabular.data import holdout_split, one_class_split
from training.tabular.train import TrainingFailedError, train_tabular_run

CONTRACT_KEYS = {
    "kind",
    "family",
    "flow",
    "config",
    "input",
    "preprocessing",
    "threshold",
    "metrics",
    "training_data",
    "fit",
    "created",
}


@pytest.fixture(scope="module")
def cardio_normal(shared_data: Path) -> np.ndarray:
    data = cardio(shared_data)
    split = one_class_split(data.y, seed=0)
    return data.x[split.train_index][:400]


def test_usflow_run_round_trip(tmp_path: Path, cardio_normal: np.ndarray) -> None:
    names = [f"c{i}" for i in range(cardio_normal.shape[1])]
    out = train_tabular_run(
        cardio_normal, "usflow", tmp_path / "run", feature_names=names, overrides=TINY_FLOW
    )
    scorer, run = load_scorer(out)
    assert set(run) >= CONTRACT_KEYS
    assert run["kind"] == "tabular" and run["family"] == "usflow" and run["flow"] == "usf"
    assert run["input"] == {"features": 21, "feature_names": names}
    assert run["training_data"]["rows"] == 360 and run["training_data"]["fingerprint"].startswith("sha256:")
    assert not run["fit"]["failed"]

    x = torch.tensor(cardio_normal, dtype=torch.float32)
    with torch.no_grad():
        score, nll = scorer(x)
    # The scorer standardises inside: same as the flow on rows standardised by hand.
    mean, std = (torch.tensor(run["preprocessing"][k], dtype=torch.float32) for k in ("mean", "std"))
    flow = scorer.detector
    assert isinstance(flow, USFlow)
    with torch.no_grad():
        standardized = (x - mean) / std
        assert torch.allclose(score, flow.latent_norm(standardized), atol=1e-5)
        assert torch.allclose(nll, flow.nll(standardized), atol=1e-3)
    # Threshold: the 99th percentile of the held-out normal rows' scores.
    _, held = holdout_split(len(cardio_normal), seed=0)
    expected = np.percentile(score.numpy()[held].astype(np.float64), 99)
    assert run["threshold"]["score"] == pytest.approx(expected, rel=1e-4)
    assert "99th percentile" in run["threshold"]["method"]
    # The eval-mode graph traces to TorchScript with identical outputs.
    traced = torch.jit.trace(scorer, x[:4])
    with torch.no_grad():
        traced_score, _ = traced(x[:100])
    assert torch.allclose(traced_score, score[:100], atol=1e-5)


@pytest.mark.parametrize("family", ["deep_svdd", "oneflow", "dohsc", "vae_usflow"])
def test_other_families_reload_with_nan_nll(tmp_path: Path, cardio_normal: np.ndarray, family: str) -> None:
    overrides = TINY_FLOW if "flow" in family else TINY
    out = train_tabular_run(cardio_normal, family, tmp_path / family, overrides=overrides, seed=1)
    scorer, run = load_scorer(out)
    assert run["family"] == family
    with torch.no_grad():
        score, nll = scorer(torch.tensor(cardio_normal[:20], dtype=torch.float32))
    assert torch.isfinite(score).all() and torch.isnan(nll).all()
    again, _ = load_scorer(out)
    with torch.no_grad():
        assert torch.equal(again(torch.tensor(cardio_normal[:20], dtype=torch.float32))[0], score)


def test_failed_training_is_recorded(tmp_path: Path, cardio_normal: np.ndarray) -> None:
    with pytest.raises(TrainingFailedError, match="non-finite"):
        train_tabular_run(cardio_normal, "usflow", tmp_path / "run", overrides={**TINY_FLOW, "lr": 1e12})
    run = read_run(tmp_path / "run")
    assert run["fit"]["failed"] is True and "non-finite" in run["fit"]["stop_reason"]


def test_unknown_model_and_override_are_clear_errors(tmp_path: Path, cardio_normal: np.ndarray) -> None:
    with pytest.raises(ValueError, match="unknown tabular model 'forest'"):
        train_tabular_run(cardio_normal, "forest", tmp_path / "a")
    with pytest.raises(ValueError, match="unknown override 'depth'"):
        train_tabular_run(cardio_normal, "usflow", tmp_path / "b", overrides={"depth": 3})


def test_train_cli_on_csv_with_labels(tmp_path: Path, cardio_normal: np.ndarray) -> None:
    rows = cardio_normal[:300]
    labels = np.zeros(len(rows), dtype=int)
    labels[:7] = 1
    header = ",".join([*(f"sensor_{i}" for i in range(rows.shape[1])), "is_anomaly"])
    body = "\n".join(
        ",".join([*(f"{v:.6g}" for v in row), str(lab)]) for row, lab in zip(rows, labels, strict=True)
    )
    path = tmp_path / "normal.csv"
    path.write_text(header + "\n" + body + "\n")
    out = tmp_path / "run"
    argv = ["train", "tabular", "--data", str(path), "--model", "usflow", "--out", str(out)]
    argv += [
        "--label-column",
        "is_anomaly",
        "--set",
        "epochs=3",
        "--set",
        "hidden=[16,16]",
        "--set",
        "n_blocks=2",
    ]
    assert main(argv) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["input"]["feature_names"][0] == "sensor_0" and run["input"]["features"] == rows.shape[1]
    assert run["training_data"]["rows"] == 293 - round(0.1 * 293)  # labelled rows dropped, 10 % held out
    assert run["config"]["hidden"] == [16, 16] and run["training"]["epochs"] == 3
    assert run["training_data"]["source"] == str(path)
