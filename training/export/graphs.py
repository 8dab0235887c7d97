"""Turn an exportable scorer (raw input in, scores out) into TorchScript and ONNX files.

Both files come from one trace of the eval-mode module on one example batch, so they hold the
same graph: pre-processing (standardisation / uint8 → normalised float), model and
post-processing (score, NLL, upsampled anomaly map) are all inside.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

# ONNX opset of every exported graph; ONNX Runtime 1.2x runs opsets up to 21+.
ONNX_OPSET = 18
INPUT_NAME = "input"
BATCH_AXIS_NAME = "N"


@torch.no_grad()
def prepare_for_export(scorer: nn.Module, example: torch.Tensor) -> nn.Module:
    """Put ``scorer`` in eval mode and run it once on ``example``.

    The warm-up call fills eval-mode caches (e.g. ``LUAffine`` materialises ``L U`` and its
    inverse once), so the traced graph holds those matrices as constants instead of the
    factorisation ops (ONNX has no ``diag`` / triangular solve).
    """
    scorer.eval()
    scorer(example)
    return scorer


def trace_scorer(scorer: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """Trace the eval-mode ``scorer`` on ``example`` once; both exported files come from this trace.

    Trace with a batch of more than one row, so that no size-1 broadcasting is baked in.
    """
    prepare_for_export(scorer, example)
    with warnings.catch_warnings(), torch.no_grad():
        # TorchScript is in maintenance mode; its deprecation notices are not actionable here.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        # Shape checks in the models become constants; the parity check at batch 1 and 7 covers them.
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        return torch.jit.trace(scorer, (example,), check_trace=False, _store_inputs=False)


def save_torchscript(traced: torch.jit.ScriptModule, path: str | Path) -> Path:
    """Write the traced module with ``torch.jit.save`` (a TorchScript archive, no Python pickle)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)
        torch.jit.save(traced, str(path))
    return Path(path)


def export_onnx(
    traced: torch.jit.ScriptModule, example: torch.Tensor, path: str | Path, output_names: Sequence[str]
) -> Path:
    """Convert the traced scorer to ONNX (opset :data:`ONNX_OPSET`) with a dynamic batch axis.

    Uses the TorchScript-based exporter (``dynamo=False``): it converts the very graph saved as
    ``model.pt``, takes ``dynamic_axes`` directly and needs a few seconds even for an image
    backbone. ``TrainingMode.PRESERVE`` keeps it from toggling ``train()``.
    """
    names = list(output_names)
    dynamic_axes = {name: {0: BATCH_AXIS_NAME} for name in [INPUT_NAME, *names]}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=UserWarning)
        torch.onnx.export(
            traced,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=names,
            dynamic_axes=dynamic_axes,
            opset_version=ONNX_OPSET,
            dynamo=False,
            training=torch.onnx.TrainingMode.PRESERVE,
            do_constant_folding=True,
        )
    return Path(path)
