# avoviirscollector: the whole suite in one image (SPEC section 8). Production build:
#     docker build -t avoviirscollector .
# The base image is a build argument: production uses the official Python slim image; a machine without a
# registry builds from a local Debian trixie base made with debootstrap (scripts/container-image does that).
ARG BASE_IMAGE=python:3.13-slim-trixie
FROM ${BASE_IMAGE}

# supercronic runs ./crontab in the image, pinned by version and checksum (the SHA-1 sums are the ones aptible
# publishes with each release; SUPERCRONIC_SHA256 is checked too when given).
# SUPERCRONIC=skip leaves it out: only for local test builds on machines that cannot download it. Those images
# say so in /app/SUPERCRONIC-SKIPPED, and the cron program (avo_cron) then runs the same crontab itself.
ARG SUPERCRONIC=download
ARG SUPERCRONIC_VERSION=v0.2.33
ARG SUPERCRONIC_ARCH=linux-amd64
ARG SUPERCRONIC_SHA1SUM=71b0d58cc53f6bd72cf2f293e09e294b79c666d8
ARG SUPERCRONIC_SHA256=
# Build-time only: a CA bundle for pip when PyPI is reached through a TLS-inspecting proxy (mount it, never COPY it).
ARG PIP_CERT=

ENV VIIRS_BASE=/viirs \
    PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    LANG=C.UTF-8 \
    TZ=UTC

# User 2001 (as the observatory's hosts run it), written directly: slim bases need not ship useradd.
RUN grep -q '^viirs:' /etc/group || echo 'viirs:x:2001:' >> /etc/group; \
    grep -q '^viirs:' /etc/passwd || echo 'viirs:x:2001:2001:avoviirscollector:/viirs:/usr/sbin/nologin' >> /etc/passwd; \
    mkdir -p /viirs /app; \
    chown 2001:2001 /viirs

RUN set -eu; \
    if [ "$SUPERCRONIC" = skip ]; then \
        echo "supercronic left out by the build (SUPERCRONIC=skip): avo_cron runs /app/crontab" > /app/SUPERCRONIC-SKIPPED; \
    else \
        url="https://github.com/aptible/supercronic/releases/download/${SUPERCRONIC_VERSION}/supercronic-${SUPERCRONIC_ARCH}"; \
        python3 -c "import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])" "$url" /usr/local/bin/supercronic; \
        echo "${SUPERCRONIC_SHA1SUM}  /usr/local/bin/supercronic" | sha1sum -c -; \
        if [ -n "$SUPERCRONIC_SHA256" ]; then echo "${SUPERCRONIC_SHA256}  /usr/local/bin/supercronic" | sha256sum -c -; fi; \
        chmod 0755 /usr/local/bin/supercronic; \
    fi

# Dependencies first (pinned in setup.py, read without running it), so that a code change reuses this layer.
COPY setup.py pyproject.toml /app/
COPY scripts/requirements-from-setup /app/scripts/
RUN set -eu; \
    if [ -z "$PIP_CERT" ]; then unset PIP_CERT; fi; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/python /app/scripts/requirements-from-setup /app/setup.py > /tmp/requirements.txt; \
    /opt/venv/bin/pip install --quiet -r /tmp/requirements.txt; \
    rm /tmp/requirements.txt

WORKDIR /app
COPY . /app
RUN set -eu; \
    if [ -z "$PIP_CERT" ]; then unset PIP_CERT; fi; \
    /opt/venv/bin/pip install --quiet --no-deps /app; \
    rm -rf /app/build /app/*.egg-info; \
    /opt/venv/bin/avo_cron --check /app/crontab

VOLUME ["/viirs"]
EXPOSE 19091 19191 29092 29093
USER 2001:2001

# Healthy: the suite ready (every program RUNNING and ready, the bus connections made: waited for up to 15 s), then
# supervisord answers, task_broker's status heard, mirror healthy, disk not full (see status.py and readiness.py).
HEALTHCHECK --interval=60s --timeout=30s --start-period=90s --retries=3 \
    CMD ["avo_status", "--quick", "--wait-ready", "--timeout", "15"]

CMD ["avoviirscollector", "supervise", "-c", "/app/supervisord.conf"]
