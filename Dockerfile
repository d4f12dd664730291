# Driftline: one image for every role (monitor, label joiner, retraining trigger,
# demo traffic). The role is the first argument: `docker run driftline monitor`.
#
#   docker build -t driftline:0.1.0 .
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
# /metrics answers while the process's metrics server runs (every role serves it).
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/metrics' % os.environ.get('DRIFTLINE_METRICS_PORT', '9108'), timeout=2)"]
ENTRYPOINT ["driftline"]
CMD ["monitor"]
