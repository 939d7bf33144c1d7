# The app's jobrunner image: the daemon (with Sentry) and the app's job types (handlers/, the
# glow-app-jobs plugin: its handlers, schedules and migrations).
#
#   docker build -t jobrunner .
#   docker run --rm -e DATABASE_URL=postgresql://… jobrunner migrate     # one-off, per deploy
#   docker run -d --name jobrunner -e DATABASE_URL=postgresql://… jobrunner   # `jobrunner run`
#
# Another application's image: the same, with its own plugin package (registered through the
# `jobrunner.handlers` entry point) and lock in place of handlers/ and requirements/lock-app.txt.

ARG PYTHON_IMAGE=python:3.11-slim

# -- build: a virtualenv with jobrunner, the app's plugin and their dependencies ----------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/jobrunner/.venv
WORKDIR /src
# hatchling builds the wheel from these; sql/ goes into it as jobrunner/sql (pyproject
# force-include), so the final stage needs nothing from the source tree.
COPY pyproject.toml README.md ./
# the dependencies of both exactly as locked, with hashes (docs/development/dependencies.md); then
# jobrunner and the plugin themselves with --no-deps, so nothing unpinned can slip in
COPY requirements/lock-app.txt ./requirements/lock-app.txt
RUN /opt/jobrunner/.venv/bin/pip install --no-cache-dir --require-hashes -r requirements/lock-app.txt
COPY sql ./sql
COPY src ./src
COPY handlers ./handlers
RUN /opt/jobrunner/.venv/bin/pip install --no-cache-dir --no-deps . ./handlers \
    && /opt/jobrunner/.venv/bin/python -c "import jobrunner.sql_files as s; print('sql at', s.sql_dir())" \
    && /opt/jobrunner/.venv/bin/python -c "import jobrunner_handlers.schema as a; print('app migrations:', len(a.MIGRATIONS.items))"

# -- run: the same Python, the virtualenv, no compilers, no pip cache, no source ----------------
FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 jobrunner \
    && useradd --system --uid 10001 --gid jobrunner --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin jobrunner
COPY --from=builder /opt/jobrunner/.venv /opt/jobrunner/.venv
ENV PATH=/opt/jobrunner/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    JOBRUNNER_LOG_FORMAT=json \
    JOBRUNNER_HTTP_HOST=0.0.0.0
# Configuration comes from the environment (docs/reference/settings.md); DATABASE_URL is required
# here: unset, jobrunner would try to start its embedded PostgreSQL, which is for demos.
USER 10001:10001

# jobrunner is PID 1 (exec-form ENTRYPOINT, no shell) and handles SIGTERM itself: it stops
# claiming, lets running jobs finish for JOBRUNNER_SHUTDOWN_GRACE (30 s) and hands the rest back.
# Give `docker stop -t` / Kubernetes terminationGracePeriodSeconds at least grace + 40 s.
STOPSIGNAL SIGTERM

# /metrics, /healthz and /readyz (docs/reference/metrics.md). The daemon binds 127.0.0.1 by
# default; inside a container that would hide /metrics from Prometheus, hence HTTP_HOST above.
# The endpoint is unauthenticated (no job data, bounded, but on the loop that runs the jobs):
# publish it only to the scraper, e.g. `-p 127.0.0.1:9108:9108` or a monitoring-only network,
# and in Kubernetes apply deploy/kubernetes/networkpolicy.yaml.
EXPOSE 9108
# /healthz turns 503 when the fetch loop is wedged. No curl in the slim image: ask with Python.
# (Kubernetes: use httpGet probes on /healthz for liveness and /readyz for readiness instead.)
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request as u; sys.exit(u.urlopen('http://127.0.0.1:9108/healthz', timeout=4).status != 200)"]

ENTRYPOINT ["jobrunner"]
CMD ["run"]
