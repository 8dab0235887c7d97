"""``build_detector(family, config)``: the one way to build any detector from its ``run.json`` config.

Tabular configs are ``training.tabular.families.default_config``'s; image configs hold
``family``, ``flow``, ``input_size``, ``backbone`` and ``model_args``.

>>> detector = build_detector("deep_svdd", {"features": 3, "widths": [4, 2]})
>>> import torch
>>> score, nll = detector.score(torch.zeros(5, 3))
>>> tuple(score.shape), bool(nll.isnan().all())
((5,), True)
"""

from __future__ import annotations

from typing import Any

from torch import nn

from models.families import kind_of


def build_detector(family: str, config: dict[str, Any]) -> nn.Module:
    """A freshly initialised detector of ``family`` (tabular or image) described by ``config``."""
    if kind_of(family) == "tabular":
        from models.tabular.factory import build_tabular_detector

        return build_tabular_detector(family, config)
    from models.image.factory import image_detector_from_config

    return image_detector_from_config({**config, "family": family})
