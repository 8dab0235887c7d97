# A batching ONNX Runtime worker. CPU by default; the compose file builds the GPU variant with
# ONNXRUNTIME="onnxruntime-gpu[cuda,cudnn]==1.32.0" (CUDA and cuDNN come as pip wheels; the host
# needs the NVIDIA driver and container toolkit). Without a GPU it falls back to the CPU provider.
FROM python:3.11-slim
ARG ONNXRUNTIME="onnxruntime==1.32.0"
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY docker/requirements-worker.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt "${ONNXRUNTIME}"
COPY service/ /app/service/
USER 10001
EXPOSE 9100
CMD ["python", "-m", "service", "worker"]
