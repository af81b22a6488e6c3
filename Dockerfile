# One image for the worker and the triggers (`runbooks worker` / `runbooks triggers`).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY settings settings
COPY workflows workflows
COPY activities activities
COPY worker worker
COPY cli cli
COPY triggers triggers
COPY simulator simulator
RUN pip install --no-cache-dir . && useradd --system runbooks
USER runbooks
ENTRYPOINT ["runbooks"]
