# syntax=docker/dockerfile:1
# Images of the two ATC services, built from ONE wheel of this repository:
#   docker build --target controller -t atc-controller:0.1.0 .
#   docker build --target webhook    -t atc-webhook:0.1.0 .
# The builder builds the wheel and installs it, with its dependencies pinned by
# requirements.lock, into /opt/venv; the runtime stages copy only that venv onto
# python:3.11-slim and run the console scripts as the numeric non-root user 65532.
# See docs/deploy.md.

ARG PYTHON_IMAGE=python:3.11-slim

# ------------------------------------------------------------------------------------------------ builder
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
COPY pyproject.toml README.md requirements.lock ./
COPY src ./src
COPY services ./services
# One wheel (atc, atc_controller, atc_webhook); then only its runtime dependencies,
# at the exact versions of requirements.lock (dev tools in the lock are not installed).
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --constraint requirements.lock /wheels/*.whl \
    && /opt/venv/bin/pip uninstall --yes pip \
    && mkdir -p /rootfs/var/lib/atc/cache /rootfs/var/lib/atc/tls

# ------------------------------------------------------------------------------------------------ runtime
FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="yoke-atc-py" \
      org.opencontainers.image.description="A Python Air Traffic Controller compatible with yoke's: Airways, flights (wasm), admission webhooks." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
COPY --from=builder /opt/venv /opt/venv
# writable for the service user: the module cache (CACHE_FS) and, for local runs, generated TLS files
COPY --from=builder --chown=65532:65532 /rootfs/ /
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CACHE_FS=/var/lib/atc/cache
WORKDIR /var/lib/atc
USER 65532:65532

# ------------------------------------------------------------------------------------------------ controller
FROM runtime AS controller
LABEL org.opencontainers.image.title="atc-controller"
# 8080 /metrics (METRICS_PORT), 8081 /healthz and /readyz (HEALTH_PORT)
EXPOSE 8080 8081
ENTRYPOINT ["atc-controller"]

# ------------------------------------------------------------------------------------------------ webhook
FROM runtime AS webhook
LABEL org.opencontainers.image.title="atc-webhook"
# 3000 HTTPS: admission, conversion, /healthz, /readyz, /metrics (PORT)
EXPOSE 3000
ENTRYPOINT ["atc-webhook"]
