"""The DuckDB schema of FieldTrace and its ordered migrations.

Physical layout follows the read patterns of later stages:
- ``gps_fixes``, ``uwb_positions`` and ``iot_readings`` are kept sorted by (entity, time) so a
  window read of one technician or device touches few row groups (zone-map pruning);
  ``Store.optimize()`` re-sorts after ingest.
- ``tickets`` are kept sorted by (region, h3_r7, created_ts) for "all tickets in an area over a
  window".
All times are TIMESTAMPTZ in UTC; all coordinates are WGS84 (the input datum is kept beside).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipelines.vocabulary import (
    ALERT_STATUSES,
    ALERT_TRENDS,
    ARRIVAL_VERDICTS,
    AUDIT_ACTIONS,
    AUDIT_OBJECT_TYPES,
    EVENT_TYPES,
    LEGACY_ARRIVAL_VERDICTS,
    ORDER_STATUSES,
    VERDICT_DECIDED_BY,
    VERDICT_REASONS,
    sql_list,
)

_VERDICT_LIST = ", ".join(f"'{v}'" for v in (*ARRIVAL_VERDICTS, *LEGACY_ARRIVAL_VERDICTS))


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


_EVENT_TYPE_LIST = ", ".join(f"'{e}'" for e in EVENT_TYPES)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "core tables: tickets, events, technicians, positions, feeds, ingest bookkeeping",
        (
            """
            CREATE TABLE ingest_batches (
                batch_id VARCHAR PRIMARY KEY,
                kind VARCHAR NOT NULL,
                format VARCHAR NOT NULL,
                path VARCHAR NOT NULL,
                file_hash VARCHAR NOT NULL,
                rows_read BIGINT NOT NULL,
                rows_accepted BIGINT NOT NULL,
                rows_quarantined BIGINT NOT NULL,
                started_at TIMESTAMPTZ NOT NULL,
                finished_at TIMESTAMPTZ NOT NULL,
                parse_s DOUBLE NOT NULL,
                validate_s DOUBLE NOT NULL,
                write_s DOUBLE NOT NULL,
                options VARCHAR,
                UNIQUE (kind, file_hash),
                CHECK (rows_read = rows_accepted + rows_quarantined)
            )
            """,
            """
            CREATE TABLE quarantine (
                batch_id VARCHAR NOT NULL,
                kind VARCHAR NOT NULL,
                source_path VARCHAR NOT NULL,
                row_number BIGINT NOT NULL,
                rule VARCHAR NOT NULL,
                field VARCHAR,
                reason VARCHAR NOT NULL,
                raw VARCHAR,
                quarantined_at TIMESTAMPTZ NOT NULL
            )
            """,
            """
            CREATE TABLE technicians (
                technician_id VARCHAR PRIMARY KEY,
                name VARCHAR,
                region VARCHAR,
                skills VARCHAR[],
                home_lat DOUBLE,
                home_lon DOUBLE,
                batch_id VARCHAR
            )
            """,
            """
            CREATE TABLE tickets (
                ticket_id VARCHAR PRIMARY KEY,
                source VARCHAR NOT NULL,
                external_id VARCHAR,
                customer_id VARCHAR,
                customer_name VARCHAR,
                address VARCHAR,
                lat DOUBLE,
                lon DOUBLE,
                datum_in VARCHAR NOT NULL,
                lat_in DOUBLE,
                lon_in DOUBLE,
                tags VARCHAR[],
                tag VARCHAR,
                category VARCHAR,
                priority VARCHAR,
                region VARCHAR,
                site_id VARCHAR,
                created_ts TIMESTAMPTZ NOT NULL,
                h3_r7 UBIGINT,
                h3_r9 UBIGINT,
                batch_id VARCHAR
            )
            """,
            f"""
            CREATE TABLE ticket_events (
                event_id VARCHAR PRIMARY KEY,
                ticket_id VARCHAR NOT NULL,
                event_type VARCHAR NOT NULL CHECK (event_type IN ({_EVENT_TYPE_LIST})),
                ts TIMESTAMPTZ NOT NULL,
                actor VARCHAR,
                source VARCHAR,
                note VARCHAR,
                batch_id VARCHAR
            )
            """,
            """
            CREATE TABLE gps_fixes (
                technician_id VARCHAR NOT NULL,
                ts TIMESTAMPTZ NOT NULL,
                lat DOUBLE NOT NULL,
                lon DOUBLE NOT NULL,
                accuracy_m DOUBLE,
                speed_mps DOUBLE,
                heading_deg DOUBLE,
                altitude_m DOUBLE,
                hdop DOUBLE,
                satellites INTEGER,
                mock_location BOOLEAN,
                datum_in VARCHAR NOT NULL,
                accuracy_source VARCHAR,
                h3 UBIGINT NOT NULL,
                source VARCHAR,
                batch_id VARCHAR
            )
            """,
            """
            CREATE TABLE uwb_sites (
                site_id VARCHAR PRIMARY KEY,
                name VARCHAR,
                origin_lat DOUBLE NOT NULL,
                origin_lon DOUBLE NOT NULL,
                origin_alt_m DOUBLE,
                rotation_deg DOUBLE NOT NULL,
                anchors VARCHAR NOT NULL,
                targets VARCHAR,
                batch_id VARCHAR
            )
            """,
            """
            CREATE TABLE uwb_positions (
                site_id VARCHAR NOT NULL,
                tag_id VARCHAR NOT NULL,
                ts TIMESTAMPTZ NOT NULL,
                x_m DOUBLE NOT NULL,
                y_m DOUBLE NOT NULL,
                z_m DOUBLE,
                lat DOUBLE NOT NULL,
                lon DOUBLE NOT NULL,
                error_m DOUBLE,
                n_anchors INTEGER,
                source VARCHAR,
                batch_id VARCHAR
            )
            """,
            """
            CREATE TABLE weather_obs (
                grid_lat DOUBLE NOT NULL,
                grid_lon DOUBLE NOT NULL,
                ts TIMESTAMPTZ NOT NULL,
                variable VARCHAR NOT NULL,
                value DOUBLE,
                unit VARCHAR,
                source VARCHAR,
                batch_id VARCHAR
            )
            """,
            """
            CREATE TABLE outages (
                outage_id VARCHAR PRIMARY KEY,
                source VARCHAR NOT NULL,
                geom_wkt VARCHAR NOT NULL,
                min_lat DOUBLE, min_lon DOUBLE, max_lat DOUBLE, max_lon DOUBLE,
                start_ts TIMESTAMPTZ NOT NULL,
                end_ts TIMESTAMPTZ,
                customers_affected BIGINT,
                cause VARCHAR,
                first_seen TIMESTAMPTZ,
                last_seen TIMESTAMPTZ,
                batch_id VARCHAR
            )
            """,
            """
            CREATE TABLE iot_devices (
                device_id VARCHAR PRIMARY KEY,
                kind VARCHAR,
                customer_id VARCHAR,
                ticket_id VARCHAR,
                lat DOUBLE,
                lon DOUBLE,
                description VARCHAR,
                batch_id VARCHAR
            )
            """,
            """
            CREATE TABLE iot_readings (
                device_id VARCHAR NOT NULL,
                ts TIMESTAMPTZ NOT NULL,
                metric VARCHAR NOT NULL,
                value DOUBLE NOT NULL,
                unit VARCHAR,
                batch_id VARCHAR
            )
            """,
            """
            CREATE TABLE vibration_series (
                series_id VARCHAR PRIMARY KEY,
                device_id VARCHAR NOT NULL,
                start_ts TIMESTAMPTZ NOT NULL,
                sample_rate_hz DOUBLE NOT NULL,
                rpm DOUBLE,
                channel VARCHAR,
                samples DOUBLE[] NOT NULL,
                batch_id VARCHAR
            )
            """,
            """
            CREATE TABLE warehouses (
                warehouse_id VARCHAR PRIMARY KEY,
                name VARCHAR,
                region VARCHAR,
                lat DOUBLE NOT NULL,
                lon DOUBLE NOT NULL,
                coverage_wkt VARCHAR,
                webhook_url VARCHAR,
                batch_id VARCHAR
            )
            """,
        ),
    ),
    Migration(
        2,
        "derived tables: arrival checks, cluster alerts, restock orders, outbox, audit",
        (
            """
            CREATE TABLE arrival_checks (
                event_id VARCHAR PRIMARY KEY,
                ticket_id VARCHAR NOT NULL,
                technician_id VARCHAR,
                event_ts TIMESTAMPTZ NOT NULL,
                verdict VARCHAR NOT NULL CHECK (verdict IN ('VERIFIED','REJECTED','INCONCLUSIVE')),
                reason VARCHAR,
                decided_by VARCHAR,
                distance_m DOUBLE,
                accuracy_m DOUBLE,
                n_fixes INTEGER,
                physical_arrival_ts TIMESTAMPTZ,
                status_lag_s DOUBLE,
                evidence VARCHAR NOT NULL,
                rule_version VARCHAR NOT NULL,
                computed_at TIMESTAMPTZ NOT NULL
            )
            """,
            """
            CREATE TABLE cluster_alerts (
                alert_id VARCHAR PRIMARY KEY,
                cluster_key VARCHAR NOT NULL,
                tag VARCHAR NOT NULL,
                status VARCHAR NOT NULL,
                trend VARCHAR NOT NULL,
                member_count INTEGER NOT NULL,
                member_cells VARCHAR[] NOT NULL,
                member_ticket_ids VARCHAR[] NOT NULL,
                geom_wkt VARCHAR,
                centroid_lat DOUBLE,
                centroid_lon DOUBLE,
                explanation VARCHAR NOT NULL,
                rule_version VARCHAR NOT NULL,
                crossed_at TIMESTAMPTZ,
                first_seen TIMESTAMPTZ NOT NULL,
                last_updated TIMESTAMPTZ NOT NULL
            )
            """,
            """
            CREATE TABLE restock_orders (
                order_id VARCHAR PRIMARY KEY,
                alert_id VARCHAR NOT NULL,
                warehouse_id VARCHAR NOT NULL,
                routed_by VARCHAR,
                sku VARCHAR NOT NULL,
                quantity DOUBLE NOT NULL,
                unit VARCHAR,
                status VARCHAR NOT NULL,
                created_at TIMESTAMPTZ NOT NULL,
                sent_at TIMESTAMPTZ,
                acknowledged_at TIMESTAMPTZ,
                fulfilled_at TIMESTAMPTZ,
                cancelled_at TIMESTAMPTZ
            )
            """,
            """
            CREATE TABLE outbox (
                message_id VARCHAR PRIMARY KEY,
                order_id VARCHAR NOT NULL,
                warehouse_id VARCHAR NOT NULL,
                idempotency_key VARCHAR NOT NULL UNIQUE,
                payload VARCHAR NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt_at TIMESTAMPTZ NOT NULL,
                delivered_at TIMESTAMPTZ,
                last_error VARCHAR,
                created_at TIMESTAMPTZ NOT NULL
            )
            """,
            """
            CREATE TABLE audit_log (
                logged_at TIMESTAMPTZ NOT NULL,
                actor VARCHAR NOT NULL,
                action VARCHAR NOT NULL,
                object_type VARCHAR NOT NULL,
                object_id VARCHAR NOT NULL,
                detail VARCHAR
            )
            """,
        ),
    ),
    Migration(
        3,
        "alert runs, alert closing, order routing detail, delivery attempts",
        (
            """
            CREATE TABLE alert_runs (
                run_id VARCHAR PRIMARY KEY,
                eval_ts TIMESTAMPTZ NOT NULL,
                ran_at TIMESTAMPTZ NOT NULL,
                mode VARCHAR NOT NULL,
                config_version VARCHAR NOT NULL,
                tickets_read BIGINT NOT NULL,
                skipped VARCHAR NOT NULL,
                firing_cells INTEGER NOT NULL,
                alerts_new INTEGER NOT NULL,
                alerts_updated INTEGER NOT NULL,
                alerts_closed INTEGER NOT NULL,
                orders_created INTEGER NOT NULL
            )
            """,
            "ALTER TABLE cluster_alerts ADD COLUMN detected_at TIMESTAMPTZ",
            "ALTER TABLE cluster_alerts ADD COLUMN last_eval_ts TIMESTAMPTZ",
            "ALTER TABLE cluster_alerts ADD COLUMN closed_at TIMESTAMPTZ",
            "ALTER TABLE restock_orders ADD COLUMN distance_m DOUBLE",
            "ALTER TABLE restock_orders ADD COLUMN member_count INTEGER",
            """
            CREATE TABLE delivery_attempts (
                message_id VARCHAR NOT NULL,
                attempt INTEGER NOT NULL,
                attempted_at TIMESTAMPTZ NOT NULL,
                status_code INTEGER,
                error VARCHAR,
                duration_ms DOUBLE NOT NULL
            )
            """,
        ),
    ),
    Migration(
        4,
        "order statuses and audit actions CHECKed against pipelines.vocabulary; dead letters",
        (
            # DuckDB cannot add a CHECK to a table, so both tables are rebuilt with theirs.
            f"""
            CREATE TABLE restock_orders_v4 (
                order_id VARCHAR PRIMARY KEY,
                alert_id VARCHAR NOT NULL,
                warehouse_id VARCHAR NOT NULL,
                routed_by VARCHAR,
                sku VARCHAR NOT NULL,
                quantity DOUBLE NOT NULL,
                unit VARCHAR,
                status VARCHAR NOT NULL CHECK (status IN ({sql_list(ORDER_STATUSES)})),
                created_at TIMESTAMPTZ NOT NULL,
                sent_at TIMESTAMPTZ,
                acknowledged_at TIMESTAMPTZ,
                fulfilled_at TIMESTAMPTZ,
                cancelled_at TIMESTAMPTZ,
                distance_m DOUBLE,
                member_count INTEGER
            )
            """,
            "INSERT INTO restock_orders_v4 BY NAME SELECT * FROM restock_orders",
            "DROP TABLE restock_orders",
            "ALTER TABLE restock_orders_v4 RENAME TO restock_orders",
            f"""
            CREATE TABLE audit_log_v4 (
                logged_at TIMESTAMPTZ NOT NULL,
                actor VARCHAR NOT NULL,
                action VARCHAR NOT NULL CHECK (action IN ({sql_list(AUDIT_ACTIONS)})),
                object_type VARCHAR NOT NULL
                    CHECK (object_type IN ({sql_list(AUDIT_OBJECT_TYPES)})),
                object_id VARCHAR NOT NULL,
                detail VARCHAR
            )
            """,
            # the dashboard used to log bare statuses; they become the state machine's words
            "INSERT INTO audit_log_v4 SELECT logged_at, actor, CASE action "
            "WHEN 'acknowledged' THEN 'order_acknowledged' WHEN 'fulfilled' THEN 'order_fulfilled' "
            "ELSE action END, object_type, object_id, detail FROM audit_log",
            "DROP TABLE audit_log",
            "ALTER TABLE audit_log_v4 RENAME TO audit_log",
            "ALTER TABLE outbox ADD COLUMN dead_at TIMESTAMPTZ",
        ),
    ),
    Migration(
        5,
        "arrival verdict tiers: status CHECK with the tiers (plus legacy VERIFIED), the "
        "verdict probabilities as columns, arrival labels for the reliability plot",
        (
            f"""
            CREATE TABLE arrival_checks_v5 (
                event_id VARCHAR PRIMARY KEY,
                ticket_id VARCHAR NOT NULL,
                technician_id VARCHAR,
                event_ts TIMESTAMPTZ NOT NULL,
                verdict VARCHAR NOT NULL CHECK (verdict IN ({_VERDICT_LIST})),
                reason VARCHAR,
                decided_by VARCHAR,
                distance_m DOUBLE,
                accuracy_m DOUBLE,
                n_fixes INTEGER,
                physical_arrival_ts TIMESTAMPTZ,
                status_lag_s DOUBLE,
                evidence VARCHAR NOT NULL,
                rule_version VARCHAR NOT NULL,
                computed_at TIMESTAMPTZ NOT NULL,
                p_within_radius DOUBLE CHECK (p_within_radius BETWEEN 0 AND 1),
                p_on_site DOUBLE CHECK (p_on_site BETWEEN 0 AND 1)
            )
            """,
            "INSERT INTO arrival_checks_v5 SELECT *, NULL, NULL FROM arrival_checks",
            "DROP TABLE arrival_checks",
            "ALTER TABLE arrival_checks_v5 RENAME TO arrival_checks",
            """
            CREATE TABLE arrival_labels (
                event_id VARCHAR PRIMARY KEY,
                true_distance_m DOUBLE NOT NULL CHECK (true_distance_m >= 0),
                source VARCHAR NOT NULL,
                labelled_at TIMESTAMPTZ NOT NULL
            )
            """,
        ),
    ),
    Migration(
        6,
        "edge sites: ticket origins with spectrum evidence, link state, published verdicts",
        (
            """
            CREATE TABLE edge_tickets (
                ticket_id VARCHAR PRIMARY KEY,
                site VARCHAR NOT NULL,
                origin VARCHAR NOT NULL,
                device_id VARCHAR NOT NULL,
                band VARCHAR NOT NULL,
                rule VARCHAR NOT NULL,
                rule_version VARCHAR NOT NULL,
                band_values VARCHAR NOT NULL,
                evidence VARCHAR NOT NULL,
                series_id VARCHAR,
                event_ts TIMESTAMPTZ NOT NULL,
                received_at TIMESTAMPTZ NOT NULL
            )
            """,
            """
            CREATE TABLE edge_links (
                site VARCHAR PRIMARY KEY,
                domain VARCHAR NOT NULL,
                stream VARCHAR NOT NULL,
                link_state VARCHAR NOT NULL CHECK (link_state IN ('up', 'down', 'unknown')),
                source_active_s DOUBLE,
                backlog BIGINT NOT NULL,
                messages_synced BIGINT NOT NULL,
                last_sync_at TIMESTAMPTZ,
                last_event_ts TIMESTAMPTZ,
                error VARCHAR,
                updated_at TIMESTAMPTZ NOT NULL
            )
            """,
            """
            CREATE TABLE verdict_publications (
                event_id VARCHAR NOT NULL,
                version INTEGER NOT NULL,
                verdict VARCHAR NOT NULL,
                reason VARCHAR,
                trigger VARCHAR NOT NULL,
                published_at TIMESTAMPTZ NOT NULL,
                PRIMARY KEY (event_id, version)
            )
            """,
        ),
    ),
    Migration(
        7,
        "live writers: bus messages already committed (idempotent replays)",
        (
            """
            CREATE TABLE bus_messages (
                msg_id VARCHAR PRIMARY KEY,
                stream VARCHAR NOT NULL,
                stream_seq BIGINT NOT NULL,
                subject VARCHAR NOT NULL,
                rows BIGINT NOT NULL,
                batch_id VARCHAR NOT NULL,
                committed_at TIMESTAMPTZ NOT NULL
            )
            """,
        ),
    ),
    Migration(
        8,
        "tickets: channel and report time (a phone call precedes the ticket's creation)",
        (
            "ALTER TABLE tickets ADD COLUMN channel VARCHAR",
            "ALTER TABLE tickets ADD COLUMN reported_ts TIMESTAMPTZ",
        ),
    ),
    Migration(
        9,
        "ingest key: a batch is keyed by its file and the options that change its result",
        (
            """
            CREATE TABLE ingest_batches_v9 (
                batch_id VARCHAR PRIMARY KEY,
                kind VARCHAR NOT NULL,
                format VARCHAR NOT NULL,
                path VARCHAR NOT NULL,
                file_hash VARCHAR NOT NULL,
                rows_read BIGINT NOT NULL,
                rows_accepted BIGINT NOT NULL,
                rows_quarantined BIGINT NOT NULL,
                started_at TIMESTAMPTZ NOT NULL,
                finished_at TIMESTAMPTZ NOT NULL,
                parse_s DOUBLE NOT NULL,
                validate_s DOUBLE NOT NULL,
                write_s DOUBLE NOT NULL,
                options VARCHAR,
                ingest_key VARCHAR NOT NULL,
                UNIQUE (kind, ingest_key),
                CHECK (rows_read = rows_accepted + rows_quarantined)
            )
            """,
            # Batches stored before: their key is their file hash (the old uniqueness).
            "INSERT INTO ingest_batches_v9 SELECT batch_id, kind, format, path, file_hash, "
            "rows_read, rows_accepted, rows_quarantined, started_at, finished_at, parse_s, "
            "validate_s, write_s, options, file_hash FROM ingest_batches",
            "DROP TABLE ingest_batches",
            "ALTER TABLE ingest_batches_v9 RENAME TO ingest_batches",
        ),
    ),
    Migration(
        10,
        "live processors: the facts they published (geofence events for the ticket timeline)",
        (
            """
            CREATE TABLE live_outputs (
                msg_id VARCHAR PRIMARY KEY,
                type VARCHAR NOT NULL,
                ticket_id VARCHAR,
                technician_id VARCHAR,
                ts TIMESTAMPTZ NOT NULL,
                data VARCHAR NOT NULL,
                published_at TIMESTAMPTZ NOT NULL
            )
            """,
        ),
    ),
    Migration(
        11,
        "one vocabulary: verdict reasons and decided_by, alert statuses and trends CHECKed "
        "against pipelines.vocabulary",
        (
            # DuckDB cannot add a CHECK to a table: both tables are rebuilt with theirs.
            f"""
            CREATE TABLE arrival_checks_v11 (
                event_id VARCHAR PRIMARY KEY,
                ticket_id VARCHAR NOT NULL,
                technician_id VARCHAR,
                event_ts TIMESTAMPTZ NOT NULL,
                verdict VARCHAR NOT NULL CHECK (verdict IN ({_VERDICT_LIST})),
                reason VARCHAR CHECK (reason IN ({sql_list(VERDICT_REASONS)})),
                decided_by VARCHAR CHECK (decided_by IN ({sql_list(VERDICT_DECIDED_BY)})),
                distance_m DOUBLE,
                accuracy_m DOUBLE,
                n_fixes INTEGER,
                physical_arrival_ts TIMESTAMPTZ,
                status_lag_s DOUBLE,
                evidence VARCHAR NOT NULL,
                rule_version VARCHAR NOT NULL,
                computed_at TIMESTAMPTZ NOT NULL,
                p_within_radius DOUBLE CHECK (p_within_radius BETWEEN 0 AND 1),
                p_on_site DOUBLE CHECK (p_on_site BETWEEN 0 AND 1)
            )
            """,
            "INSERT INTO arrival_checks_v11 BY NAME SELECT * FROM arrival_checks",
            "DROP TABLE arrival_checks",
            "ALTER TABLE arrival_checks_v11 RENAME TO arrival_checks",
            f"""
            CREATE TABLE cluster_alerts_v11 (
                alert_id VARCHAR PRIMARY KEY,
                cluster_key VARCHAR NOT NULL,
                tag VARCHAR NOT NULL,
                status VARCHAR NOT NULL CHECK (status IN ({sql_list(ALERT_STATUSES)})),
                trend VARCHAR NOT NULL CHECK (trend IN ({sql_list(ALERT_TRENDS)})),
                member_count INTEGER NOT NULL,
                member_cells VARCHAR[] NOT NULL,
                member_ticket_ids VARCHAR[] NOT NULL,
                geom_wkt VARCHAR,
                centroid_lat DOUBLE,
                centroid_lon DOUBLE,
                explanation VARCHAR NOT NULL,
                rule_version VARCHAR NOT NULL,
                crossed_at TIMESTAMPTZ,
                first_seen TIMESTAMPTZ NOT NULL,
                last_updated TIMESTAMPTZ NOT NULL,
                detected_at TIMESTAMPTZ,
                last_eval_ts TIMESTAMPTZ,
                closed_at TIMESTAMPTZ
            )
            """,
            "INSERT INTO cluster_alerts_v11 BY NAME SELECT * FROM cluster_alerts",
            "DROP TABLE cluster_alerts",
            "ALTER TABLE cluster_alerts_v11 RENAME TO cluster_alerts",
        ),
    ),
    Migration(
        12,
        "kept window stops: each technician's stops on its arrivals' window fixes, with the "
        "stop rule and a digest of those fixes (pipelines.arrivals.kept_stops)",
        (
            """
            CREATE TABLE window_stops (
                technician_id VARCHAR NOT NULL,
                start_ts TIMESTAMPTZ NOT NULL,
                end_ts TIMESTAMPTZ NOT NULL,
                n_fixes BIGINT NOT NULL CHECK (n_fixes >= 1),
                centroid_lat DOUBLE NOT NULL,
                centroid_lon DOUBLE NOT NULL,
                centroid_se_m DOUBLE NOT NULL CHECK (centroid_se_m >= 0),
                diameter_m DOUBLE NOT NULL CHECK (diameter_m >= 0),
                duration_s DOUBLE NOT NULL CHECK (duration_s >= 0)
            )
            """,
            """
            CREATE TABLE window_stop_marks (
                technician_id VARCHAR PRIMARY KEY,
                stop_rule VARCHAR NOT NULL,
                n_fixes BIGINT NOT NULL,
                fixes_digest UBIGINT NOT NULL,
                n_stops BIGINT NOT NULL,
                computed_at TIMESTAMPTZ NOT NULL
            )
            """,
        ),
    ),
)

TABLES: frozenset[str] = frozenset(
    {
        "ingest_batches",
        "quarantine",
        "technicians",
        "tickets",
        "ticket_events",
        "gps_fixes",
        "uwb_sites",
        "uwb_positions",
        "weather_obs",
        "outages",
        "iot_devices",
        "iot_readings",
        "vibration_series",
        "warehouses",
        "arrival_checks",
        "arrival_labels",
        "cluster_alerts",
        "restock_orders",
        "outbox",
        "audit_log",
        "alert_runs",
        "delivery_attempts",
        "edge_tickets",
        "edge_links",
        "verdict_publications",
        "bus_messages",
        "live_outputs",
        "window_stops",
        "window_stop_marks",
    }
)

# Physical sort keys that ``Store.optimize`` restores after ingest.
SORT_KEYS: dict[str, tuple[str, ...]] = {
    "gps_fixes": ("technician_id", "ts"),
    "uwb_positions": ("site_id", "tag_id", "ts"),
    "iot_readings": ("device_id", "ts"),
    "ticket_events": ("ticket_id", "ts"),
    "tickets": ("region", "h3_r7", "created_ts"),
    "weather_obs": ("grid_lat", "grid_lon", "ts"),
}

MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    "version INTEGER PRIMARY KEY, description VARCHAR, applied_at TIMESTAMPTZ)"
)

# DuckLake stores no PRIMARY KEY, UNIQUE or CHECK constraint (nor indexes). The same migrations
# run there with those clauses removed (NOT NULL and DEFAULT stay); the writers keep each one:
WRITER_ENFORCED: dict[str, str] = {
    "primary keys of reference and ticket tables": "ingest's key rules (duplicate_key against "
    "the store and within the file) under the store's per-kind writer lock",
    "ingest_batches UNIQUE (kind, file_hash)": "ingest's already-ingested check, taken under "
    "the same per-kind writer lock (a PostgreSQL advisory lock on DuckLake)",
    "ingest_batches CHECK (rows_read = accepted + quarantined)": "the ingest machine's count "
    "check before the write",
    "ticket_events CHECK (event_type IN ...)": "the unknown_event_type rule",
    "arrival_checks PRIMARY KEY / CHECK (verdict)": "the arrivals runner replaces verdicts "
    "per event id in one transaction; verdicts come from geofence.verdict's enum",
    "window_stop_marks PRIMARY KEY, window_stops CHECKs": "kept_stops replaces a technician's "
    "stops and mark together, in one transaction; the values come from geofence.stops",
    "cluster_alerts, restock_orders, outbox, alert_runs keys": "ids minted by the runner "
    "(uuid / hashed keys) and the outbox idempotency key derived from the order id",
    "schema_migrations PRIMARY KEY": "migrations run under a PostgreSQL advisory lock",
}

_BARE_KEY = re.compile(r"\s+(?:PRIMARY\s+KEY|UNIQUE)\b(?!\s*\()", re.IGNORECASE)
_CLAUSE = re.compile(r"\b(?:CHECK|UNIQUE|PRIMARY\s+KEY)\s*\(", re.IGNORECASE)


def _closing_paren(sql: str, open_at: int) -> int:
    depth = 0
    for i in range(open_at, len(sql)):
        if sql[i] == "(":
            depth += 1
        elif sql[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f"unbalanced parentheses in schema statement at offset {open_at}: {sql!r}")


def without_constraints(sql: str) -> str:
    """The statement with PRIMARY KEY, UNIQUE and CHECK clauses removed (for DuckLake)."""
    out = sql
    while (m := _CLAUSE.search(out)) is not None:
        end = _closing_paren(out, m.end() - 1)
        start = m.start()
        before = out[:start].rstrip()
        if before.endswith(","):  # a table-level constraint: drop its separating comma too
            start = len(before) - 1
        out = out[:start] + out[end + 1 :]
    return _BARE_KEY.sub("", out)


def statements_for(migration: Migration, backend: str) -> tuple[str, ...]:
    """The migration's statements as the backend ('duckdb' or 'ducklake') accepts them."""
    if backend == "ducklake":
        return tuple(without_constraints(s) for s in migration.statements)
    return migration.statements
