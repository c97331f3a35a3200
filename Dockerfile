# The worker image: the streamproc package, the example handlers/ and the topics file.
#   docker build -t streamproc:0.1.0 .
#   docker run --rm -e STREAMPROC_BOOTSTRAP_SERVERS=kafka:9092 streamproc:0.1.0
# Your own app: build FROM this image, COPY your module next to handlers/ and run
# `streamproc worker --app yourmodule:app` (the Helm chart's worker.app).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies and the package first, so editing handlers/ or topics/ does not reinstall them.
COPY pyproject.toml README.md LICENSE ./
COPY streamproc ./streamproc
RUN pip install '.[cli,web]' && rm -rf build streamproc.egg-info  # [cli]: the `streamproc` command; [web]: `streamproc web`

# --app MODULE:ATTR is imported from the working directory, and topics/topics.yaml is the default topics file.
COPY handlers ./handlers
COPY topics ./topics

# Non-root, with the uid the Helm chart's securityContext runs as; nothing in /app is writable.
RUN groupadd --system --gid 10001 streamproc \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin streamproc
USER 10001:10001

# /metrics, /healthz and /readyz
EXPOSE 9400

CMD ["streamproc", "worker", "--app", "handlers.app:app"]
