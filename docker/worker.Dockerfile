# A batching ONNX Runtime worker. CPU by default (ONNXRUNTIME="onnxruntime==1.32.0");
# docker-compose.gpu.yml builds the GPU variant with
# ONNXRUNTIME="onnxruntime-gpu[cuda,cudnn]==1.31.1" (CUDA and cuDNN come as pip wheels; the
# host needs the NVIDIA driver and container toolkit). Exactly one ONNX Runtime is installed:
# both packages provide the same `onnxruntime` module. Without a usable GPU the worker falls
# back to the CPU provider and logs it.
# BASE_IMAGE: any image with Python 3.11, `python` and `pip` on PATH (default: the official one).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
ARG ONNXRUNTIME="onnxruntime==1.32.0"
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY docker/requirements-worker.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt "${ONNXRUNTIME}"
COPY service/ /app/service/
USER 10001
EXPOSE 9100
CMD ["python", "-m", "service", "worker"]
