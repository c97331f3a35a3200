# The streamproc images: two targets of one multi-stage build.
#   worker    the package with its cli and web extras, nothing else: build FROM it for your own app
#   example   (the default: the last stage) worker + the example handlers/ and topics/, which the
#             Helm chart's defaults run (worker.app=handlers.app:app)
#
#   docker build --target worker -t registry.example.com/streamproc:0.1.0 .
#   docker build --target example -t registry.example.com/streamproc-example:0.1.0 .
#   docker run --rm -e STREAMPROC_BOOTSTRAP_SERVERS=kafka:9092 registry.example.com/streamproc-example:0.1.0
#
# BASE_IMAGE is any image with python3 (3.11 or later) and its venv module: python:3.11-slim by
# default; `make image` passes a Debian bookworm root filesystem of its own (debootstrap, python3,
# python3-venv), since no registry it can reach serves python:3.11-slim. The package lives in a
# virtual environment, /opt/streamproc, made with the base's own python3, so both layouts work.
#
# Your own app: FROM the worker image, COPY your module into /app (the working directory, which
# `--app MODULE:ATTR` imports from) and run `streamproc worker --app yourmodule:app`.
ARG BASE_IMAGE=python:3.11-slim

# The build stages' common ground: pip's settings and, when the build host needs its own, where pip
# finds packages and which CAs it trusts (`make image` passes the host's, with its CA bundle mounted
# read-only for the RUN steps: never in an image). Only the build stages derive from it.
FROM ${BASE_IMAGE} AS build
ARG PIP_INDEX_URL=""
ARG PIP_EXTRA_INDEX_URL=""
ARG PIP_TRUSTED_HOST=""
ARG PIP_CERT=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_INDEX_URL=${PIP_INDEX_URL} \
    PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL} \
    PIP_TRUSTED_HOST=${PIP_TRUSTED_HOST} \
    PIP_CERT=${PIP_CERT}

# Stage 1: the wheel, built from the sources with the declared build-system (setuptools >= 77).
FROM build AS wheel
RUN python3 -m venv /opt/build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY streamproc ./streamproc
RUN /opt/build/bin/pip wheel --quiet --no-deps --wheel-dir /wheels .

# Stage 2: the virtual environment, with the wheel and its [cli,web] extras (the `streamproc`
# command and `streamproc web`); no dev, docs or bench dependencies.
FROM build AS venv
# The dependencies first, read from pyproject.toml alone: editing the sources or the README (the
# wheel's description) then reinstalls only the wheel, not every dependency.
COPY pyproject.toml /tmp/pyproject.toml
RUN python3 -m venv /opt/streamproc \
    && python3 -c 'import tomllib; p = tomllib.load(open("/tmp/pyproject.toml", "rb"))["project"]; \
        extras = p["optional-dependencies"]; print(*p["dependencies"], *extras["cli"], *extras["web"], sep="\n")' \
        > /tmp/requirements.txt \
    && /opt/streamproc/bin/pip install --quiet --requirement /tmp/requirements.txt \
    && rm /tmp/pyproject.toml /tmp/requirements.txt
COPY --from=wheel /wheels /wheels
RUN /opt/streamproc/bin/pip install --quiet "$(echo /wheels/streamproc-*.whl)[cli,web]" \
    && /opt/streamproc/bin/streamproc --version

# The worker image: the base, the virtual environment and a non-root user.
FROM ${BASE_IMAGE} AS worker
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/streamproc/bin:$PATH
# The uid and gid the Helm chart's securityContext runs as. /app, like everything else, is root's:
# nothing outside /tmp needs to be writable.
RUN groupadd --gid 10001 streamproc \
    && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin streamproc \
    && mkdir -m 755 /app
COPY --from=venv /opt/streamproc /opt/streamproc
WORKDIR /app
USER 10001:10001
# /metrics, /healthz and /readyz
EXPOSE 9400
ENTRYPOINT ["streamproc"]
CMD ["--help"]

# The example image: the worker image with the example App and the topics file.
# --app MODULE:ATTR is imported from the working directory, and topics/topics.yaml is the default topics file.
FROM worker AS example
COPY handlers ./handlers
COPY topics ./topics
CMD ["worker", "--app", "handlers.app:app"]
