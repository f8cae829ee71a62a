# syntax=docker/dockerfile:1
#
# streamapp production image: one `streamapp worker` per container.
#
#   docker build -t streamapp .
#   docker run --rm -e STREAMAPP_BROKER=kafka://broker:9092 \
#       -e STREAMAPP_ADVERTISED_URL=http://<this-host>:6066 \
#       -e STREAMAPP_TOKENS_FILE=/run/secrets/tokens.toml \
#       -e STREAMAPP_SECRET_FILE=/run/secrets/streamapp.keys \
#       -v "$PWD/secrets:/run/secrets:ro" \
#       -p 6066:6066 -v streamapp-data:/var/lib/streamapp streamapp
#
# The image runs config/production.toml: no development token or key (the dev
# configuration, config/streamapp.toml, and its key, config/secrets/, are not
# even in the image, see .dockerignore). API tokens and the HMAC keys come from mounted files that
# streamapp reads itself (STREAMAPP_TOKENS_FILE, STREAMAPP_SECRET_FILE); it
# refuses to start without the keys, or with a development token or key, since
# the API listens on every interface here (SPEC §13). See docs/operations.md.
# Both stages use the same base image, so the virtualenv built in /opt/venv
# keeps working when copied (its python is a symlink to
# /usr/local/bin/python3.11 of the base image).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --------------------------------------------------------------------------
# builder: resolve and install the project and its dependencies into a venv.
# rocksdict, polars, aiokafka, aiohttp ... all ship manylinux wheels, so no
# compiler is installed here. (On a platform without wheels, add
# `apt-get install -y --no-install-recommends build-essential` to this stage.)
# --------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Dependencies first, from [project].dependencies of pyproject.toml alone, so
# that this (slow) layer is rebuilt only when the dependency list changes and
# not on every source edit.
COPY pyproject.toml ./
RUN python -c "import sys, tomllib; deps = tomllib.load(open('pyproject.toml', 'rb')).get('project', {}).get('dependencies', []); sys.stdout.write(''.join(d + chr(10) for d in deps))" > /tmp/requirements.txt \
    && if [ -s /tmp/requirements.txt ]; then pip install --no-cache-dir -r /tmp/requirements.txt; fi

# Then the project itself (streamapp/, agents/, tables/ -> the streamapp package).
COPY . .
RUN pip install --no-cache-dir . \
    && pip check

# --------------------------------------------------------------------------
# runtime
# --------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="streamapp" \
      org.opencontainers.image.description="Faust stream-processing engine for recipient data and e-mail sending on Apache Kafka"

# tini as PID 1: forwards SIGTERM/SIGINT to the worker (which then commits
# offsets, flushes the producer and closes RocksDB) and reaps zombies.
# libstdc++6 is needed by the rocksdict wheel (already in the base image;
# listed so that it is never dropped). Versions are not pinned: see
# .hadolint.yaml (DL3008).
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini libstdc++6 \
    && rm -rf /var/lib/apt/lists/*

ARG STREAMAPP_UID=10001
RUN groupadd --system --gid "${STREAMAPP_UID}" streamapp \
    && useradd --system --uid "${STREAMAPP_UID}" --gid streamapp \
        --home-dir /var/lib/streamapp --no-create-home \
        --shell /usr/sbin/nologin streamapp \
    && install -d -o streamapp -g streamapp -m 0750 /var/lib/streamapp \
    && install -d -o streamapp -g streamapp -m 0770 /srv/streamapp /srv/streamapp/drop

COPY --from=builder /opt/venv /opt/venv
# The production configuration and the templates (read-only for the worker);
# mount your own over /app/config or point STREAMAPP_CONFIG elsewhere.
COPY config/ /app/config/

WORKDIR /app

# STREAMAPP_WEB_HOST: the HTTP API must listen on all interfaces in a
# container (config/production.toml says so too).
# STREAMAPP_ADVERTISED_URL (set per worker at run time, e.g. by compose) is
# the URL at which the other workers reach this one to forward table reads.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONFAULTHANDLER=1 \
    STREAMAPP_CONFIG=/app/config/production.toml \
    STREAMAPP_DATA_DIR=/var/lib/streamapp \
    STREAMAPP_WEB_HOST=0.0.0.0 \
    STREAMAPP_WEB_PORT=6066

# state/ (RocksDB), processed/, rejected/, outbox/. One volume per worker:
# never share it between two running workers. /srv/streamapp (drop/ and the
# claims beside it, config/production.toml drop_dir) exists owned by the
# worker so that the volume shared by every worker starts with the right owner.
VOLUME ["/var/lib/streamapp"]

# Numeric, so that Kubernetes runAsNonRoot can verify it.
USER ${STREAMAPP_UID}:${STREAMAPP_UID}

EXPOSE 6066

# /healthz answers 200 once the worker is ready (partitions assigned, tables
# recovered), 503 before; urlopen raises on any non-2xx (exit status 1), so
# anything but 200 fails. No curl in slim images: python's urllib does it.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('STREAMAPP_WEB_PORT') or '6066'; r = urllib.request.urlopen('http://127.0.0.1:%s/healthz' % port, timeout=4); sys.exit(0 if r.status == 200 else 1)"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["tini", "--", "streamapp"]
CMD ["worker"]
