# Driftline: one image for every role (monitor, label joiner, retraining trigger,
# status page, demo traffic). The role is the first argument:
# `docker run ghcr.io/driftline/driftline:0.1.0 monitor`.
#
#   docker build -t ghcr.io/driftline/driftline:0.1.0 .    # or: docker compose build
#
# The tag is the one reference docker-compose.yml (DRIFTLINE_IMAGE) and k8s/
# (kustomization.yaml `images:`) use; push it to your registry under another name with
# `kustomize edit set image ghcr.io/driftline/driftline=<registry>/driftline:<tag>`.
#
# Stage 1 builds a wheel (no compiler in the runtime image); stage 2 installs it as a
# non-root user. Python 3.11 as in CI.
FROM python:3.11-slim AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && pip wheel --wheel-dir /wheels "$(ls /wheels/driftline-*.whl)"

FROM python:3.11-slim
LABEL org.opencontainers.image.title="driftline" \
      org.opencontainers.image.description="Streaming drift detection for ML models" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DRIFTLINE_METRICS_PORT=9108
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links /wheels driftline \
 && rm -rf /wheels \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin driftline
USER 10001:10001
EXPOSE 9108
# /livez answers 200 while the worker's event loop and consumer make progress, 503 when
# they are stuck (docs/operations.md, "Health"). The status page role overrides it
# (compose: /healthz on its own port).
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/livez' % os.environ.get('DRIFTLINE_METRICS_PORT', '9108'), timeout=2)"]
ENTRYPOINT ["driftline"]
CMD ["monitor"]
