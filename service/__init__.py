"""usfad scoring service: FastAPI API, Redis queue, ONNX Runtime workers."""
