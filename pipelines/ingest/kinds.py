"""What each ingestible kind looks like: its table, canonical columns, key and rules.

A *kind* is what a user names on the command line (``fieldtrace ingest gps ...``). Every source
module turns its files into a frame of the kind's canonical columns; the shared machinery in
``pipelines.ingest.machine`` then types, validates, deduplicates and writes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

UTC_TS = pl.Datetime("us", "UTC")


@dataclass(frozen=True)
class KindSpec:
    """The contract of one kind of input."""

    name: str
    table: str
    columns: dict[str, pl.DataType]
    required: tuple[str, ...]
    key: tuple[str, ...]
    time_columns: tuple[str, ...] = ()
    latlon: tuple[str, str] | None = None
    list_columns: tuple[str, ...] = ()
    has_datum: bool = False
    rules: tuple[str, ...] = field(default=())
    description: str = ""


_F64 = pl.Float64()
_STR = pl.String()
_I64 = pl.Int64()

KINDS: dict[str, KindSpec] = {
    spec.name: spec
    for spec in (
        KindSpec(
            name="technicians",
            table="technicians",
            columns={
                "technician_id": _STR,
                "name": _STR,
                "region": _STR,
                "skills": pl.List(pl.String()),
                "home_lat": _F64,
                "home_lon": _F64,
            },
            required=("technician_id",),
            key=("technician_id",),
            list_columns=("skills",),
            rules=("projected_coordinates", "lat_lon_range", "duplicate"),
            description="Technicians and their home region.",
        ),
        KindSpec(
            name="tickets",
            table="tickets",
            columns={
                "ticket_id": _STR,
                "source": _STR,
                "external_id": _STR,
                "customer_id": _STR,
                "customer_name": _STR,
                "address": _STR,
                "lat": _F64,
                "lon": _F64,
                "datum": _STR,
                "tags": pl.List(pl.String()),
                "tag": _STR,
                "category": _STR,
                "priority": _STR,
                "region": _STR,
                "site_id": _STR,
                "created_ts": UTC_TS,
                "channel": _STR,
                "reported_ts": UTC_TS,
            },
            required=("ticket_id", "created_ts"),
            key=("ticket_id",),
            time_columns=("created_ts", "reported_ts"),
            latlon=("lat", "lon"),
            list_columns=("tags",),
            has_datum=True,
            rules=(
                "unknown_datum",
                "projected_coordinates",
                "lat_lon_range",
                "time_range",
                "duplicate",
            ),
            description=(
                "Tickets: customer, address point with its datum, tags, region; the channel "
                "(phone, portal, app, ...) and, when it precedes creation, the report time."
            ),
        ),
        KindSpec(
            name="events",
            table="ticket_events",
            columns={
                "event_id": _STR,
                "ticket_id": _STR,
                "event_type": _STR,
                "ts": UTC_TS,
                "actor": _STR,
                "source": _STR,
                "note": _STR,
            },
            required=("ticket_id", "event_type", "ts"),
            key=("event_id",),
            time_columns=("ts",),
            rules=("unknown_event_type", "time_range", "closed_before_created", "duplicate"),
            description="Ticket lifecycle events.",
        ),
        KindSpec(
            name="gps",
            table="gps_fixes",
            columns={
                "technician_id": _STR,
                "ts": UTC_TS,
                "lat": _F64,
                "lon": _F64,
                "accuracy_m": _F64,
                "speed_mps": _F64,
                "heading_deg": _F64,
                "altitude_m": _F64,
                "hdop": _F64,
                "satellites": _I64,
                "mock_location": pl.Boolean(),
                "datum": _STR,
                "accuracy_source": _STR,
                "source": _STR,
            },
            required=("technician_id", "ts", "lat", "lon"),
            key=("technician_id", "ts"),
            time_columns=("ts",),
            latlon=("lat", "lon"),
            has_datum=True,
            rules=(
                "unknown_datum",
                "projected_coordinates",
                "lat_lon_range",
                "time_range",
                "missing_accuracy",
                "duplicate",
                "speed_jump",
            ),
            description="Technician GPS fixes.",
        ),
        KindSpec(
            name="uwb_sites",
            table="uwb_sites",
            columns={
                "site_id": _STR,
                "name": _STR,
                "origin_lat": _F64,
                "origin_lon": _F64,
                "origin_alt_m": _F64,
                "rotation_deg": _F64,
                "anchors": _STR,
                "targets": _STR,
            },
            required=("site_id", "origin_lat", "origin_lon", "rotation_deg", "anchors"),
            key=("site_id",),
            latlon=("origin_lat", "origin_lon"),
            rules=("projected_coordinates", "lat_lon_range", "duplicate"),
            description="UWB sites: local frame origin/rotation, anchors and targets as JSON.",
        ),
        KindSpec(
            name="uwb_positions",
            table="uwb_positions",
            columns={
                "site_id": _STR,
                "tag_id": _STR,
                "ts": UTC_TS,
                "x_m": _F64,
                "y_m": _F64,
                "z_m": _F64,
                "lat": _F64,
                "lon": _F64,
                "error_m": _F64,
                "n_anchors": _I64,
                "source": _STR,
            },
            required=("site_id", "tag_id", "ts", "x_m", "y_m"),
            key=("site_id", "tag_id", "ts"),
            time_columns=("ts",),
            rules=("unknown_site", "time_range", "duplicate"),
            description="UWB tag positions in a site's local frame (metres).",
        ),
        KindSpec(
            name="weather",
            table="weather_obs",
            columns={
                "grid_lat": _F64,
                "grid_lon": _F64,
                "ts": UTC_TS,
                "variable": _STR,
                "value": _F64,
                "unit": _STR,
                "source": _STR,
            },
            required=("grid_lat", "grid_lon", "ts", "variable"),
            key=("grid_lat", "grid_lon", "ts", "variable", "source"),
            time_columns=("ts",),
            latlon=("grid_lat", "grid_lon"),
            rules=("projected_coordinates", "lat_lon_range", "time_range", "duplicate"),
            description="Hourly weather per grid point, long format with units.",
        ),
        KindSpec(
            name="outages",
            table="outages",
            columns={
                "outage_id": _STR,
                "source": _STR,
                "geom_wkt": _STR,
                "start_ts": UTC_TS,
                "end_ts": UTC_TS,
                "customers_affected": _I64,
                "cause": _STR,
            },
            required=("outage_id", "geom_wkt", "start_ts"),
            key=("outage_id",),
            time_columns=("start_ts", "end_ts"),
            rules=("bad_geometry", "time_range", "duplicate"),
            description="Power outages: WKT geometry in WGS84, start and optional end.",
        ),
        KindSpec(
            name="iot_devices",
            table="iot_devices",
            columns={
                "device_id": _STR,
                "kind": _STR,
                "customer_id": _STR,
                "ticket_id": _STR,
                "lat": _F64,
                "lon": _F64,
                "description": _STR,
            },
            required=("device_id",),
            key=("device_id",),
            latlon=("lat", "lon"),
            rules=("projected_coordinates", "lat_lon_range", "duplicate"),
            description="IoT devices at customer sites.",
        ),
        KindSpec(
            name="iot",
            table="iot_readings",
            columns={
                "device_id": _STR,
                "ts": UTC_TS,
                "metric": _STR,
                "value": _F64,
                "unit": _STR,
            },
            required=("device_id", "ts", "metric", "value"),
            key=("device_id", "ts", "metric"),
            time_columns=("ts",),
            rules=("not_finite", "time_range", "duplicate"),
            description="IoT time series, long format: device, time, metric, value.",
        ),
        KindSpec(
            name="warehouses",
            table="warehouses",
            columns={
                "warehouse_id": _STR,
                "name": _STR,
                "region": _STR,
                "lat": _F64,
                "lon": _F64,
                "coverage_wkt": _STR,
                "webhook_url": _STR,
            },
            required=("warehouse_id", "lat", "lon"),
            key=("warehouse_id",),
            latlon=("lat", "lon"),
            rules=("projected_coordinates", "lat_lon_range", "bad_geometry", "duplicate"),
            description="Regional warehouses: location, coverage polygon (WKT), webhook.",
        ),
    )
}


def kind_spec(name: str) -> KindSpec:
    from pipelines.errors import SourceFormatError

    try:
        return KINDS[name]
    except KeyError:
        raise SourceFormatError(
            f"unknown kind {name!r}; expected one of {', '.join(sorted(KINDS))}"
        ) from None


# Vibration waveforms (appended by the sources work): one row per channel of a recording.
KINDS["vibration"] = KindSpec(
    name="vibration",
    table="vibration_series",
    columns={
        "series_id": _STR,
        "device_id": _STR,
        "start_ts": UTC_TS,
        "sample_rate_hz": _F64,
        "rpm": _F64,
        "channel": _STR,
        "samples": pl.List(pl.Float64()),
    },
    required=("series_id", "device_id", "start_ts", "sample_rate_hz", "samples"),
    key=("series_id",),
    time_columns=("start_ts",),
    list_columns=("samples",),
    rules=("time_range", "duplicate"),
    description="Vibration waveforms: one channel per row, samples as a list, declared rate.",
)
