FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY tokenops ./tokenops
COPY ingest ./ingest
COPY relay ./relay
COPY streams ./streams
COPY warehouse ./warehouse
COPY dashboards ./dashboards
RUN pip install --no-cache-dir . && apt-get update && apt-get install -y --no-install-recommends procps \
    && rm -rf /var/lib/apt/lists/*
ENV TOKENOPS_DATA_DIR=/data
CMD ["tokenops", "--help"]
