# The scoring API: FastAPI + Redis client + Pillow. No torch, no onnxruntime, no training code.
# BASE_IMAGE: any image with Python 3.11, `python` and `pip` on PATH (default: the official
# one; CI passes a Debian-built base, see docker/ci_base_image.sh).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY docker/requirements-api.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt
COPY service/ /app/service/
USER 10001
EXPOSE 8000
CMD ["python", "-m", "service", "serve"]
