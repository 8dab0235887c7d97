"""usfad scoring service: FastAPI API, Redis Streams queue, batching ONNX Runtime workers.

Nothing in this package imports torch or ``training``: serving needs only the exported
bundles, onnxruntime, numpy, Pillow, redis and the web stack.
"""
