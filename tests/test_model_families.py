"""One list of family names (``models.families``), one spec per tabular family, one protocol.

Fast: builds each detector untrained and scores a few rows; the learning itself is tested in
``test_tabular_models.py``.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from models.factory import build_detector
from models.families import IMAGE_FAMILIES, IMAGE_FLOW_KINDS, TABULAR_FAMILIES, kind_of
from models.tabular.detector import TabularDetector
from tests.conftest import REPO_ROOT
from training.cli import build_parser
from training.tabular.families import SPECS, default_config, resolve, spec


def test_every_tabular_family_has_exactly_one_spec() -> None:
    assert tuple(SPECS) == TABULAR_FAMILIES
    with pytest.raises(ValueError, match="unknown tabular model 'forest'"):
        spec("forest")


@pytest.mark.parametrize("family", TABULAR_FAMILIES)
def test_every_tabular_detector_implements_loss_and_score(family: str) -> None:
    detector = build_detector(family, default_config(family, features=4))
    assert isinstance(detector, TabularDetector)
    if family == "do2hsc":  # the shell radii are set by training
        detector.set_radii(torch.randn(16, 4))
    x = torch.randn(5, 4)
    score, nll = detector.score(x)
    assert score.shape == nll.shape == (5,)
    assert detector.loss(x).shape == ()


def test_names_and_kinds() -> None:
    assert {kind_of(name) for name in TABULAR_FAMILIES} == {"tabular"}
    assert {kind_of(name) for name in IMAGE_FAMILIES} == {"image"}
    with pytest.raises(ValueError, match="unknown model family"):
        kind_of("forest")
    with pytest.raises(ValueError, match="unknown override 'depth'"):
        resolve("usflow", 4, 0, {"depth": 3})


def _choices(parser, *path: str) -> dict[str, tuple[str, ...]]:
    for name in path:
        action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        parser = action.choices[name]
    listed = [a for a in parser._actions if a.choices and not isinstance(a.choices, dict)]
    return {a.dest: tuple(a.choices) for a in listed}


def test_cli_choices_come_from_the_one_list() -> None:
    image = _choices(build_parser(), "train", "image")
    assert image["model"] == IMAGE_FAMILIES and image["flow"] == IMAGE_FLOW_KINDS


def test_the_list_of_names_imports_no_torch() -> None:
    code = "import sys, models.families; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
