# Sidekiq Supervisor: one uvicorn worker per container (scale with replicas), as a non-root user.
#   docker build -t sidekiq-supervisor .
# A quick look on the embedded SQLite file in /app/data (add -v supervisor-data:/app/data to keep it):
#   docker run --rm -p 8000:8000 --add-host=host.docker.internal:host-gateway \
#     -e SUPERVISOR_REDIS_URL=redis://host.docker.internal:6379/0 \
#     sidekiq-supervisor sh -c 'sidekiq-supervisor migrate && exec sidekiq-supervisor serve'
# Production sets SUPERVISOR_DATABASE_URL (MySQL/MariaDB) and runs `sidekiq-supervisor migrate` once
# per release before the new pods roll (k8s/README.md).

FROM python:3.11-slim AS builder

# The venv is built where it runs (/app/.venv) with the image's own Python, never a downloaded one;
# bytecode is compiled here because the runtime filesystem is read-only.
ENV UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /app

# Dependencies first (their layer survives code changes): exactly uv.lock, without the dev group.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project

# Then the project itself, installed editable so app/cli/main.py finds alembic.ini and
# migrations/ beside app/ (it resolves them from its own path).
COPY README.md ./
COPY app ./app
RUN uv sync --frozen --no-dev \
    && python -m compileall -q app


FROM python:3.11-slim AS runtime

LABEL org.opencontainers.image.title="sidekiq-supervisor" \
      org.opencontainers.image.description="Job ledger, Redis sampler and Prometheus exporter for Sidekiq" \
      org.opencontainers.image.licenses="MIT"

# A fixed uid/gid so Kubernetes can check runAsNonRoot and volumes can be owned by number.
RUN groupadd --system --gid 10001 supervisor \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin supervisor

WORKDIR /app
COPY --from=builder /app/.venv ./.venv
COPY --from=builder /app/app ./app
COPY migrations ./migrations
COPY alembic.ini ./
# The only writable place in the image: the embedded SQLite file of a plain `docker run`.
RUN install -d -o 10001 -g 10001 -m 0750 /app/data

ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SUPERVISOR_HOST=0.0.0.0 \
    SUPERVISOR_PORT=8000 \
    SUPERVISOR_DATABASE_URL=sqlite:////app/data/supervisor.db

USER 10001:10001
EXPOSE 8000

# slim has no curl: the standard library asks /healthz (no I/O behind it), any error exits 1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('SUPERVISOR_PORT', '8000') + '/healthz', timeout=3)"]

# One process, one uvicorn worker (the Prometheus collectors are per process): scale with replicas.
CMD ["sidekiq-supervisor", "serve"]
