"""Run one scorer three ways on the same numpy batch: PyTorch eager, TorchScript, ONNX Runtime.

Each runner is built once (session / module load) and then called per batch, which is what
the parity check and the benchmark both need.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn


def _as_numpy_list(outputs: torch.Tensor | tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    if isinstance(outputs, torch.Tensor):
        outputs = (outputs,)
    return [output.detach().cpu().numpy() for output in outputs]


class EagerRunner:
    """The scorer module itself, eval mode, no autograd."""

    def __init__(self, scorer: nn.Module) -> None:
        self.scorer = scorer.eval()

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            return _as_numpy_list(self.scorer(torch.from_numpy(batch)))


class TorchScriptRunner:
    """A ``model.pt`` loaded with ``torch.jit.load`` (TorchScript's own loader, not ``torch.load``).

    Load only files whose sha256 was verified against a manifest first.
    """

    def __init__(self, path: str | Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=FutureWarning)  # TorchScript deprecation notice
            self.module = torch.jit.load(str(path), map_location="cpu").eval()

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            return _as_numpy_list(self.module(torch.from_numpy(batch)))


class OnnxRunner:
    """A ``model.onnx`` in an ONNX Runtime CPU session."""

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: ONNX Runtime's default (one per core)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [output.name for output in self.session.get_outputs()]

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        return list(self.session.run(self.output_names, {self.input_name: batch}))
