# syntax=docker/dockerfile:1
# ONE image of the ATC, built from one wheel of this repository, holding both services' console
# scripts: `atc-controller` (the default command) and `atc-webhook`. The Helm chart and
# docker-compose.yml pick the command per container.
#   docker build -t atc:0.1.0 .                    # the base below, pinned by digest
#   docker build --build-arg PYTHON_IMAGE=<image> .  # any Python 3.11 image with python and pip on PATH,
#                                                    # e.g. the Debian-built one of tools/baseimage.py
# The builder builds the wheel and installs it, with its dependencies pinned by requirements.lock,
# into /opt/venv; the runtime stage copies only that venv and runs as the numeric non-root user
# 65532. See docs/deploy.md.

# python:3.11-slim (Debian bookworm) by digest; docs/deploy.md says how to move it.
ARG PYTHON_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

# ------------------------------------------------------------------------------------------------ builder
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
# The runtime dependencies first, at the exact versions of requirements.lock (its dev tools are not
# installed), in a layer of their own: a change of the sources does not reinstall them.
COPY pyproject.toml requirements.lock ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/runtime-requirements.txt \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --constraint requirements.lock -r /tmp/runtime-requirements.txt
# Then one wheel (atc, atc_controller, atc_webhook), without dependencies: they are in place.
COPY README.md ./
COPY src ./src
COPY services ./services
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install --no-deps /wheels/*.whl \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/pip uninstall --yes pip \
    && mkdir -p /rootfs/var/lib/atc/cache /rootfs/var/lib/atc/tls

# ------------------------------------------------------------------------------------------------ runtime
FROM ${PYTHON_IMAGE} AS atc
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
# atc-controller: 8080 /metrics (METRICS_PORT), 8081 /healthz and /readyz (HEALTH_PORT)
# atc-webhook: 3000 HTTPS: admission, conversion, /healthz, /readyz, /metrics (PORT)
EXPOSE 8080 8081 3000
CMD ["atc-controller"]
