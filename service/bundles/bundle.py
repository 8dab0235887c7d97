"""The one model-bundle loader (docs/contracts.md), shared by the service and ``usfad score``.

``load_bundle(path)`` validates the manifest and the model name, verifies every sha256, and
opens an ONNX Runtime session (CUDA when onnxruntime offers it, else CPU). ``Bundle`` then
scores validated inputs: ``score`` (latent norm), ``nll`` and, for images, ``anomaly_map``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:
    import onnxruntime as ort
except ImportError as missing:  # neither extra installed: say which to install
    raise ImportError(
        "no ONNX Runtime installed: pip install 'usfad[cpu]' (onnxruntime) or 'usfad[gpu]' "
        "(onnxruntime-gpu), never both (docs/deployment.md)"
    ) from missing

from service.analytic import analytic_p_values
from service.bundles.manifest import Manifest, read_manifest, validate_model_name, verify_files
from service.calibration import p_values, read_calibration_file, read_map_maxima
from service.contract import ONNX_FILE
from service.errors import BundleError, CalibrationError, InputError
from service.inputs import validate_image_batch, validate_tabular_rows

LOG = logging.getLogger("usfad.bundle")

__all__ = [
    "Bundle",
    "ScoreOutputs",
    "choose_providers",
    "load_bundle",
    "open_session",
]


def choose_providers(device: str = "auto") -> list[str]:
    """ONNX Runtime providers: CUDA first when available (``device`` auto/cuda), else CPU."""
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise BundleError(f"device 'cuda' asked for, but onnxruntime offers only {available}")
    return ["CPUExecutionProvider"]


@dataclass(frozen=True)
class ScoreOutputs:
    """Per-input results: ``score`` and ``nll`` ``[N]``; ``anomaly_map`` ``[N, H, W]`` or ``None``."""

    score: np.ndarray
    nll: np.ndarray
    anomaly_map: np.ndarray | None = None


class Bundle:
    """A loaded model: its manifest, an ONNX Runtime session over ``model.onnx``, its calibration."""

    def __init__(
        self,
        path: Path,
        manifest: Manifest,
        session: ort.InferenceSession,
        calibration: np.ndarray | None = None,
        map_max: np.ndarray | None = None,
    ) -> None:
        self.path = path
        self.manifest = manifest
        self.session = session
        self.calibration = calibration  # sorted calibration scores (docs/calibration.md) or None
        self.map_max = map_max  # sorted maxima of the calibration images' returned maps, or None
        self._input_name = session.get_inputs()[0].name
        self._output_names = [output.name for output in session.get_outputs()]
        for required in ("score", "nll"):
            if required not in self._output_names:
                raise BundleError(
                    f"{path}/{ONNX_FILE} has no output {required!r} (outputs: {self._output_names})"
                )

    @property
    def name(self) -> str:
        """The served model name (the bundle directory's name)."""
        return self.path.name

    @property
    def version(self) -> str:
        """The manifest's version string."""
        return self.manifest.version

    @property
    def providers(self) -> list[str]:
        """The execution providers the session actually uses."""
        return list(self.session.get_providers())

    def run(self, inputs: np.ndarray) -> ScoreOutputs:
        """Score an already validated batch (float32 ``[N, F]`` or uint8 ``[N, H, W, C]``)."""
        outputs = dict(
            zip(self._output_names, self.session.run(None, {self._input_name: inputs}), strict=True)
        )
        anomaly_map = outputs.get("anomaly_map")
        if anomaly_map is not None:
            anomaly_map = np.asarray(anomaly_map, dtype=np.float32).reshape(
                inputs.shape[0], *anomaly_map.shape[-2:]
            )
        return ScoreOutputs(
            score=np.asarray(outputs["score"], dtype=np.float32).reshape(-1),
            nll=np.asarray(outputs["nll"], dtype=np.float32).reshape(-1),
            anomaly_map=anomaly_map,
        )

    def p_values(self, scores: np.ndarray) -> dict[str, np.ndarray]:
        """``{"p_value": …[, "p_value_analytic": …]}`` of ``scores``; empty when uncalibrated."""
        if self.calibration is None:
            return {}
        arrays = {"p_value": p_values(self.calibration, scores)}
        analytic = (self.manifest.calibration or {}).get("analytic")
        if analytic:
            arrays["p_value_analytic"] = analytic_p_values(scores, analytic["dof"], analytic["scale"])
        return arrays

    def score_tabular(self, rows: Any) -> ScoreOutputs:
        """Validate tabular rows (see ``validate_tabular_rows``) and score them."""
        return self.run(validate_tabular_rows(rows, self.manifest))

    def score_images(self, images: np.ndarray) -> ScoreOutputs:
        """Score a uint8 ``[N, H, W, C]`` batch already resized to the model's size."""
        return self.run(validate_image_batch(images, self.manifest))


def load_bundle(bundle_dir: str | Path, device: str = "auto", threads: int = 0) -> Bundle:
    """Validate, verify and open a bundle; ``BundleError`` (never a half-loaded model) otherwise.

    Args:
        bundle_dir: the bundle directory; its name is the model name and must be valid.
        device: ``auto`` (CUDA if onnxruntime has it), ``cpu`` or ``cuda``.
        threads: ONNX Runtime intra-op threads (0: onnxruntime's default).
    """
    path = Path(bundle_dir).resolve()
    try:
        validate_model_name(path.name, "bundle directory")
    except InputError as error:
        raise BundleError(str(error)) from error
    manifest = read_manifest(path)
    verify_files(path, manifest)
    calibration = map_max = None
    if manifest.calibration is not None:
        file_name = manifest.calibration["file"]
        try:
            data = (path / file_name).read_bytes()
            calibration = read_calibration_file(data, manifest.calibration_n)
            if manifest.calibration.get("mask") is not None:
                map_max = read_map_maxima(data, manifest.calibration_n)
        except CalibrationError as error:
            raise BundleError(f"{path}/{file_name}: {error}") from error
    options = ort.SessionOptions()
    if threads > 0:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = open_session(path / ONNX_FILE, options, choose_providers(device), device)
    return Bundle(path, manifest, session, calibration, map_max)


def open_session(
    model: Path, options: ort.SessionOptions, providers: list[str], device: str = "auto"
) -> ort.InferenceSession:
    """An ONNX Runtime session on ``providers``; CPU, with a log line, when CUDA cannot start.

    onnxruntime-gpu lists ``CUDAExecutionProvider`` even when the CUDA or cuDNN libraries or the
    driver are missing; the session then either raises or silently runs on CPU. With ``device``
    ``auto`` both cases end on the CPU provider and say so in the log; with ``cuda`` they raise
    ``BundleError``.
    """
    try:
        session = ort.InferenceSession(str(model), options, providers=providers)
    except Exception as error:  # onnxruntime raises its own exception types for bad graphs
        if "CUDAExecutionProvider" not in providers or device == "cuda":
            raise BundleError(f"{model}: onnxruntime cannot load it ({error})") from error
        LOG.warning("%s: the CUDA provider cannot start (%s); falling back to CPU", model.parent.name, error)
        return open_session(model, options, ["CPUExecutionProvider"], device)
    if "CUDAExecutionProvider" in providers and "CUDAExecutionProvider" not in session.get_providers():
        if device == "cuda":
            raise BundleError(f"{model}: device 'cuda' asked for, but the CUDA provider did not start")
        LOG.warning(
            "%s: the CUDA provider did not start (see onnxruntime's message above); running on %s",
            model.parent.name,
            ",".join(session.get_providers()),
        )
    return session
