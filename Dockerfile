# FieldTrace image: the same install steps as `make install` (+ chromium only for tests).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    FIELDTRACE_STORE_PATH=/var/lib/fieldtrace/fieldtrace.duckdb \
    FIELDTRACE_DATA_DIR=/var/lib/fieldtrace

# make, and the services `make services` installs: nats-server (the live bus; `serve` starts it
# as a child when no bus_url answers) and mosquitto (MQTT for IoT devices).
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends make \
    nats-server mosquitto \
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
# dashboard, OsmAnd positions, CloudEvents
EXPOSE 8050 5055 8070
ENTRYPOINT ["fieldtrace"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8050"]
