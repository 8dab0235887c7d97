"""The demo image model of ``usfad serve --demo``, trained exactly as the product trains it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.image


def test_demo_image_model_trains_and_separates_defects(tmp_path: Path) -> None:
    """About 13 s on one CPU core (8 epochs of FastFlow-USF on 40 synthetic images at 96×128)."""
    from sklearn.metrics import roc_auc_score

    from training.image.data import load_category, load_images
    from training.image.demo import DEMO_CATEGORY, DEMO_SIZE, train_demo_image_run
    from training.runs import load_scorer

    # As training.demo.build_image calls it for `usfad serve --demo`.
    run_dir = train_demo_image_run(tmp_path / "runs" / "demo-image", data_root=tmp_path / "image-data")
    scorer, run = load_scorer(run_dir)
    assert run["family"] == "fastflow" and run["flow"] == "usf" and not run["fit"]["failed"]
    assert (run["input"]["height"], run["input"]["width"]) == DEMO_SIZE
    assert np.isfinite(run["threshold"]["score"])

    # The reloaded scorer ranks the generated defective test images above the good ones.
    category = load_category(tmp_path / "image-data" / DEMO_CATEGORY)
    with torch.no_grad():
        scores, _, maps = scorer(load_images(category.test, DEMO_SIZE))
    labels = np.array(category.test_labels)
    auroc = 100 * roc_auc_score(labels, scores.numpy())
    assert auroc > 75, auroc  # measured 100.0 (2026-12-02, CPU default with whitening)
    assert auroc == pytest.approx(run["metrics"]["image_auroc"], abs=1e-3)  # the run reports this model
    assert float(scores[labels == 1].median()) > float(scores[labels == 0].median())
    assert run["metrics"]["pixel_auroc"] > 85  # measured 94.7
    assert maps.shape == (len(category.test), 1, *DEMO_SIZE)
