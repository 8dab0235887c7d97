"""The bare floor of ``usfad bench serve``: the same request and answer, nothing around the model.

One FastAPI app with the service's two scoring routes and the same request and answer shapes,
but no queue, no batching, no metrics, no middleware: the handler parses the body (orjson;
Pillow for images), calls ``session.run`` inline and answers with orjson. Whatever the service
costs beyond this app is the price of its queue, batching and safety. Run it alone with

    python benchmarks/floor_app.py --model-dir BUNDLES --port 8099 [--ort-threads 1]

(``usfad bench serve`` starts it itself next to the service and drives both the same way).
"""

from __future__ import annotations

import argparse
import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from service.images import decode_image, heatmap_png, resize_for_model, resize_map


def _session(bundle: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if threads > 0:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(bundle / "model.onnx"), options, providers=["CPUExecutionProvider"])


def create_floor_app(model_dir: Path, threads: int = 1) -> FastAPI:
    """The floor app serving every bundle under ``model_dir``."""
    models: dict[str, tuple[dict[str, Any], ort.InferenceSession]] = {}
    for bundle in sorted(path for path in model_dir.iterdir() if (path / "manifest.json").is_file()):
        models[bundle.name] = (json.loads((bundle / "manifest.json").read_text()), _session(bundle, threads))
    app = FastAPI()

    def run(name: str, inputs: np.ndarray) -> dict[str, np.ndarray]:
        session = models[name][1]
        names = [output.name for output in session.get_outputs()]
        return dict(zip(names, session.run(None, {session.get_inputs()[0].name: inputs}), strict=True))

    @app.post("/score/tabular")
    async def tabular(request: Request) -> Response:
        data = orjson.loads(await request.body())
        manifest = models[data["model"]][0]
        outputs = run(data["model"], np.asarray(data["rows"], dtype=np.float32))
        cut = float(manifest["threshold"]["score"])
        scores, nlls = outputs["score"].reshape(-1).tolist(), outputs["nll"].reshape(-1).tolist()
        results = [{"score": s, "nll": n, "is_anomaly": s > cut} for s, n in zip(scores, nlls, strict=True)]
        body = {"request_id": "-", "model": data["model"], "version": manifest["version"], "threshold": cut}
        return Response(orjson.dumps({**body, "results": results}), media_type="application/json")

    @app.post("/score/image")
    async def image(request: Request, model: str, map: str = "png") -> Response:
        manifest = models[model][0]
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form()
            uploads = [await item.read() for item in form.getlist("images")]
        else:
            uploads = [await request.body()]
        spec = manifest["input"]
        pixels = [decode_image(data, spec["color_mode"]) for data in uploads]
        batch = np.stack([resize_for_model(p, spec["height"], spec["width"]) for p in pixels])
        outputs = run(model, batch)
        cut = float(manifest["threshold"]["score"])
        results = []
        for index, image in enumerate(pixels):
            height, width = image.shape[:2]
            score = float(outputs["score"].reshape(-1)[index])
            answer: dict[str, Any] = {"index": index, "width": width, "height": height, "score": score}
            answer.update(nll=float(outputs["nll"].reshape(-1)[index]), is_anomaly=score > cut)
            if map != "none":
                values = resize_map(outputs["anomaly_map"].reshape(len(pixels), *batch.shape[1:3])[index],
                                    height, width)
                low, high = float(values.min()), float(values.max())
                answer["anomaly_map"] = {"format": map, "width": width, "height": height, "low": low,
                                         "high": high}
                if map == "png":
                    png = heatmap_png(values, low, high)
                    answer["anomaly_map"]["png_base64"] = base64.b64encode(png).decode()
                else:
                    answer["anomaly_map"]["values"] = values
            results.append(answer)
        body = {"request_id": "-", "model": model, "version": manifest["version"], "threshold": cut}
        return Response(orjson.dumps({**body, "results": results}, option=orjson.OPT_SERIALIZE_NUMPY),
                        media_type="application/json")

    @app.get("/health/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--ort-threads", type=int, default=1)
    args = parser.parse_args()
    app = create_floor_app(args.model_dir, args.ort_threads)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
