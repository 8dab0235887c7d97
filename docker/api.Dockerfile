# The scoring API: FastAPI + Redis client + Pillow. No torch, no onnxruntime, no training code.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY docker/requirements-api.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt
COPY service/ /app/service/
USER 10001
EXPOSE 8000
CMD ["python", "-m", "service", "serve"]
