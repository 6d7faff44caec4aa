# syntax=docker/dockerfile:1
# One image for every rtml service: the service is chosen by the command,
#   docker run IMAGE python -m rtml.services.ingestion      (the default)
#   docker run IMAGE python -m rtml.services.<name>         (any other service)
#   docker run IMAGE rtml topics                       (create the topics)
# Build: docker build -t rtml .   (needs BuildKit: the default since Docker 23)
# See docs/DEPLOY.md. Pin the base by digest for production builds:
#   --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest>
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---------------------------------------------------------------- builder --
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# 1. Dependencies only, in a layer of their own: rebuilt when pyproject.toml
#    changes, not when code does. xgboost-cpu provides the same `xgboost`
#    module without the NVIDIA NCCL wheel (set XGBOOST_PACKAGE=xgboost for it).
#    RTML_EXTRAS adds optional dependencies: `--build-arg RTML_EXTRAS=mlflow` for
#    the MLflow peer registry (RTML_MLFLOW_TRACKING_URI).
ARG XGBOOST_PACKAGE=xgboost-cpu
ARG RTML_EXTRAS=""
COPY pyproject.toml ./
COPY infra/docker/requirements.py /tmp/requirements.py
RUN --mount=type=cache,target=/root/.cache/pip \
    python /tmp/requirements.py pyproject.toml --xgboost "${XGBOOST_PACKAGE}" --extras "${RTML_EXTRAS}" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

# 2. rtml itself (dependencies already satisfied above).
COPY setup.py README.md ./
COPY rtml ./rtml
COPY shared ./shared
COPY services ./services
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-deps .

# ---------------------------------------------------------------- runtime --
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --gid 10001 rtml \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /app --shell /usr/sbin/nologin rtml \
 && mkdir -p /var/lib/rtml/models /var/lib/rtml/warehouse \
 && chown -R 10001:10001 /var/lib/rtml
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONPATH=/app \
    RTML_MODEL_STORE=/var/lib/rtml/models \
    RTML_WAREHOUSE=/var/lib/rtml/warehouse
COPY --from=builder /opt/venv /opt/venv

# The source again, under /app and owned by the service user, laid out as the
# wheel installs it (shared/ and services/ inside the rtml package): /app comes
# first on sys.path (PYTHONPATH), so Tilt's live_update can sync edits here; the
# copy installed in the venv provides the `rtml` command and the package metadata.
WORKDIR /app
COPY --chown=10001:10001 rtml ./rtml
COPY --chown=10001:10001 shared ./rtml/shared
COPY --chown=10001:10001 services ./rtml/services
COPY --chown=10001:10001 infra/docker/devreload.py ./infra/docker/devreload.py

# The commit recorded with every model version (the image has no .git).
ARG GIT_COMMIT=""
ENV RTML_GIT_COMMIT=${GIT_COMMIT}

USER 10001:10001
# HTTP side ports: ingestion 8080, features 8081, router 8082, prediction 8083,
# collector 8084, trainer 8085, dashboard 8090 (each set by its RTML_*_PORT).
EXPOSE 8080
CMD ["python", "-m", "rtml.services.ingestion"]
