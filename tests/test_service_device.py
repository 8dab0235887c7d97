"""The worker's device choice: CUDA when it starts, else CPU with a log line (real ONNX Runtime).

This machine has no GPU and the CPU onnxruntime, so asking for the CUDA provider exercises the
path a GPU host takes when CUDA cannot start: onnxruntime skips the provider and the session
runs on CPU. benchmarks/gpu_check.sh checks the CUDA side on a GPU host.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from service.bundles.bundle import choose_providers, open_session
from service.errors import BundleError

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """A one-node ONNX graph (y = x + x) in a directory named like a bundle."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["y"])],
        "double",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx_model.ir_version = 8
    path = tmp_path / "demo-model" / "model.onnx"
    path.parent.mkdir()
    onnx.save(onnx_model, path)
    return path


def test_auto_falls_back_to_cpu_with_a_log_line_when_cuda_does_not_start(model: Path, caplog) -> None:
    assert "CUDAExecutionProvider" not in ort.get_available_providers()  # the premise of this test
    with caplog.at_level(logging.WARNING, logger="usfad.bundle"):
        session = open_session(model, ort.SessionOptions(), ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert session.get_providers() == ["CPUExecutionProvider"]
    messages = [record.message for record in caplog.records]
    assert any("CUDA provider did not start" in m and "demo-model" in m for m in messages)
    (y,) = session.run(None, {"x": np.ones((2, 3), np.float32)})
    np.testing.assert_array_equal(y, 2 * np.ones((2, 3), np.float32))


def test_cuda_asked_for_explicitly_is_an_error_not_a_silent_cpu_run(model: Path) -> None:
    with pytest.raises(BundleError, match="cuda"):
        choose_providers("cuda")
    with pytest.raises(BundleError, match="CUDA provider did not start"):
        open_session(model, ort.SessionOptions(), ["CUDAExecutionProvider", "CPUExecutionProvider"], "cuda")


def test_cpu_only_when_asked_and_no_log_line(model: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="usfad.bundle"):
        session = open_session(model, ort.SessionOptions(), choose_providers("cpu"), "cpu")
    assert session.get_providers() == ["CPUExecutionProvider"] and not caplog.records
