# The load generator: the core package (gRPC client, protos, workload) and Locust; no torch, no
# Triton. Build from the repository root: docker build -f benchmarks/locust.Dockerfile .
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY proto proto
COPY service service
COPY contract contract
COPY training training
COPY benchmarks benchmarks
RUN pip install --no-cache-dir . "locust>=2.20" && python -m service.codegen
ENV PYTHONUNBUFFERED=1
EXPOSE 8089
ENTRYPOINT ["locust"]
