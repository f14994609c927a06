# FieldTrace image: the same install steps as `make install` (+ chromium only for tests).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    FIELDTRACE_STORE_PATH=/var/lib/fieldtrace/fieldtrace.duckdb \
    FIELDTRACE_DATA_DIR=/var/lib/fieldtrace

RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml Makefile README.md ./
COPY geofence ./geofence
COPY pipelines ./pipelines
COPY dashboard ./dashboard
COPY cli ./cli
RUN make install PYTHON=python3.11

ENV PATH=/app/.venv/bin:$PATH
VOLUME ["/var/lib/fieldtrace"]
EXPOSE 8050
ENTRYPOINT ["fieldtrace"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8050"]
