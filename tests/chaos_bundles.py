"""Hand-built ONNX bundles for the chaos suite: real graphs, run by the real loader and ONNX Runtime.

``overflow_image_bundle`` writes an image model whose anomaly map is ``exp(pixel)``: finite for
pixels up to 88, ``+inf`` in float32 above, so a bright pixel makes the score overflow. No
trained model overflows on uint8 pixels, so this graph is what proves the image path keeps the
verdict promise (``service.verdict``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import onnx
from onnx import TensorProto, helper

SIZE = 8


def write_bundle(directory: Path, model: onnx.ModelProto, manifest: dict) -> Path:
    """Write ``model.onnx`` and a manifest listing its sha256 (docs/contracts.md)."""
    directory.mkdir(parents=True, exist_ok=True)
    data = model.SerializeToString()
    (directory / "model.onnx").write_bytes(data)
    files = {"model.onnx": hashlib.sha256(data).hexdigest()}
    (directory / "manifest.json").write_text(json.dumps({**manifest, "files": files}, indent=2))
    return directory


def overflow_image_bundle(directory: Path, threshold: float = 1e30) -> Path:
    """Grayscale ``SIZE`` × ``SIZE`` model: map = exp(pixel), score = nll = max of the map."""
    nodes = [
        helper.make_node("Cast", ["input"], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["pixels"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Exp", ["nchw"], ["anomaly_map"]),
        helper.make_node("ReduceMax", ["anomaly_map"], ["score"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Identity", ["score"], ["nll"]),
    ]
    graph = helper.make_graph(
        nodes,
        "overflow_image",
        [helper.make_tensor_value_info("input", TensorProto.UINT8, ["N", SIZE, SIZE, 1])],
        [
            helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"]),
            helper.make_tensor_value_info("nll", TensorProto.FLOAT, ["N"]),
            helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["N", 1, SIZE, SIZE]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    manifest = {
        "format_version": 1,
        "name": directory.name,
        "version": "overflow-1",
        "kind": "image",
        "input": {"height": SIZE, "width": SIZE, "channels": 1, "color_mode": "grayscale"},
        "outputs": [{"name": "score"}, {"name": "nll"}, {"name": "anomaly_map"}],
        "threshold": {"score": threshold},
    }
    return write_bundle(directory, model, manifest)
