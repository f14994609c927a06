"""Power-outage feeds: GeoJSON FeatureCollections, ingested once or merged as snapshots.

Features: polygons (kept as WKT), or points; a point with a radius (property ``radius_m`` /
``radius``, or ``IngestOptions.extra['radius_m']``) becomes a 32-gon buffered in metres in a
local azimuthal-equidistant frame around the point; a point without a radius stays a POINT.
Start/end/customers/cause come from common property names (``StartTime``, ``start``, ...).
Naive times are in ``--tz``. The id is the feature's id property when it has one, else
``ou-<hash of rounded lon/lat and start>`` so that the same event in two snapshots has one id
even when its cause text changed.

``ingest_file(..., 'outages', ...)`` writes a file as one batch; its ids are keys, so an event
already stored is quarantined as ``duplicate``. Feeds that are *polled* need upsert semantics
instead: ``merge_outage_snapshot`` runs the same ingest machine with the ``snapshot`` writer
(``merge_snapshot_rows``), which applies one snapshot in the batch's transaction:

* an id not stored yet is inserted (``first_seen = last_seen = snapshot time``);
* a stored id is updated (geometry, customers, cause, end) and ``last_seen`` advances;
* an open outage of the same source (no end) that the snapshot no longer lists ends at the
  snapshot time. Snapshots older than what is stored only widen ``first_seen``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import shapely
from shapely.geometry import Polygon, shape

from geofence.uwb import SiteFrame, local_to_wgs84
from pipelines.errors import SourceFormatError
from pipelines.ingest.contract import QUARANTINE_SCHEMA, IngestOptions, ParsedBatch, WriteJob
from pipelines.ingest.kinds import KindSpec
from pipelines.ingest.machine import ingest_file
from pipelines.ingest.sources import register, register_writer
from pipelines.ingest.sources.text import load_json
from pipelines.settings import Settings
from pipelines.store.gateway import Store, Tx

BUFFER_VERTICES = 32
PROPS: dict[str, tuple[str, ...]] = {
    "id": ("outage_id", "OutageId", "outageId", "IncidentId", "incident_id", "id", "ID"),
    "start_ts": ("StartTime", "start_time", "startTime", "start", "OutageStartTime", "begin"),
    "end_ts": ("EndTime", "end_time", "endTime", "end", "EstimatedRestoration", "restored"),
    "customers_affected": ("CustomersAffected", "customers_affected", "customers", "affected"),
    "cause": ("Cause", "cause", "reason"),
    "radius_m": ("radius_m", "radius"),
}


def _prop(props: dict[str, Any], canon: str) -> Any:
    return next((props[k] for k in PROPS[canon] if props.get(k) not in (None, "")), None)


def load_collection(path: Path) -> list[Any]:
    data = load_json(path, "GeoJSON FeatureCollection")
    if not (
        isinstance(data, dict)
        and isinstance(data.get("features"), list)
        and data.get("type", "FeatureCollection") == "FeatureCollection"
    ):
        found = data.get("type") if isinstance(data, dict) else type(data).__name__
        raise SourceFormatError(f"{path}: expected GeoJSON FeatureCollection, found {found}")
    return list(data["features"])


def buffered_point_wkt(lon: float, lat: float, radius_m: float) -> str:
    angle = np.linspace(0.0, 2 * np.pi, BUFFER_VERTICES, endpoint=False)
    blat, blon = local_to_wgs84(
        radius_m * np.cos(angle), radius_m * np.sin(angle), SiteFrame(lat, lon)
    )
    return str(Polygon(np.column_stack([blon, blat])).wkt)


def _geometry_wkt(geom: Any, radius: Any) -> str:
    g = shape(geom)
    if g.geom_type == "Point" and radius is not None:
        r = float(radius)
        if not np.isfinite(r) or r <= 0:
            raise ValueError(f"radius={radius} is not a positive number of metres")
        return buffered_point_wkt(g.x, g.y, r)
    return str(g.wkt)


def stable_outage_id(geom: Any, start: Any) -> str:
    coords = geom.get("coordinates") if isinstance(geom, dict) else None
    flat = np.round(np.asarray(coords, dtype=np.float64).ravel()[:2], 5).tolist() if coords else []
    return "ou-" + hashlib.sha1(json.dumps([flat, str(start)]).encode()).hexdigest()[:16]


def _feature_row(feat: Any, opts: IngestOptions) -> dict[str, Any]:
    if not isinstance(feat, dict) or not isinstance(feat.get("properties", {}) or {}, dict):
        raise ValueError("feature is not a GeoJSON Feature object")
    props = feat.get("properties") or {}
    geom = feat.get("geometry")
    start = _prop(props, "start_ts")
    fid = _prop(props, "id") if _prop(props, "id") is not None else feat.get("id")
    radius = _prop(props, "radius_m") or opts.extra.get("radius_m")
    try:
        wkt = _geometry_wkt(geom, radius) if geom else None
    except (ValueError, TypeError, AttributeError, IndexError, shapely.errors.GEOSException) as e:
        raise ValueError(f"geometry cannot be read: {e}") from e
    cust = _prop(props, "customers_affected")
    return {
        "outage_id": str(fid) if fid is not None else stable_outage_id(geom, start),
        "geom_wkt": wkt,
        "start_ts": None if start is None else str(start),
        "end_ts": None if _prop(props, "end_ts") is None else str(_prop(props, "end_ts")),
        "customers_affected": None if cust is None else str(cust),
        "cause": None if _prop(props, "cause") is None else str(_prop(props, "cause")),
    }


def read_geojson(path: Path, spec: KindSpec, opts: IngestOptions) -> ParsedBatch:
    features = load_collection(path)
    rows, rejects = [], []
    for n, feat in enumerate(features, start=1):
        try:
            rows.append({"_row": n, **_feature_row(feat, opts)})
        except (ValueError, TypeError) as exc:
            rejects.append(
                {
                    "_row": n,
                    "rule": "bad_geometry",
                    "field": "geometry",
                    "reason": f"{path.name} feature {n}: {exc}",
                    "raw": json.dumps(feat, default=str)[:2000],
                }
            )
    cols = ("outage_id", "geom_wkt", "start_ts", "end_ts", "customers_affected", "cause")
    frame = pl.DataFrame(rows, schema={"_row": pl.Int64, **dict.fromkeys(cols, pl.String)})
    frame = frame.with_columns(pl.lit(opts.source_name or "geojson").alias("source"))
    return ParsedBatch(
        frame, pl.DataFrame(rejects, schema=QUARANTINE_SCHEMA), len(features), "geojson"
    )


# -- snapshots ---------------------------------------------------------------------------
@dataclass
class SnapshotResult:
    batch_id: str
    snapshot_ts: datetime
    rows_read: int
    inserted: int
    updated: int
    closed: int
    quarantined: int
    reasons: dict[str, int]
    skipped: bool = False


def merge_snapshot_rows(tx: Tx, job: WriteJob) -> dict[str, Any]:
    """The ``snapshot`` writer: upsert ``job.rows`` and close what the snapshot dropped.

    Runs inside the machine's write transaction (see the module docstring for the rules)."""
    snap = job.rows.drop("first_seen", "last_seen", strict=False)
    latest = snap["start_ts"].max() if snap.height else None
    snap_ts = job.observed_at or (latest if isinstance(latest, datetime) else None) or job.started
    source = job.source or "geojson"
    tx.register("ft_snapshot", snap.select(pl.col("outage_id").cast(pl.String)))
    known = tx.query(
        "SELECT outage_id FROM outages WHERE outage_id IN (SELECT outage_id FROM ft_snapshot)"
    )["outage_id"].to_list()
    new = snap.filter(~pl.col("outage_id").is_in(known))
    tx.insert_frame(
        "outages",
        new.with_columns(
            pl.lit(snap_ts).dt.convert_time_zone("UTC").alias("first_seen"),
            pl.lit(snap_ts).dt.convert_time_zone("UTC").alias("last_seen"),
        ),
        {"batch_id": job.batch_id},
    )
    upd = snap.filter(pl.col("outage_id").is_in(known))
    if upd.height:
        tx.register("ft_updates", upd)
        tx.execute(
            "UPDATE outages SET geom_wkt = u.geom_wkt, min_lat = u.min_lat, "
            "min_lon = u.min_lon, max_lat = u.max_lat, max_lon = u.max_lon, "
            "customers_affected = u.customers_affected, cause = u.cause, end_ts = u.end_ts, "
            "last_seen = ?, batch_id = ? FROM ft_updates u "
            "WHERE outages.outage_id = u.outage_id AND outages.last_seen <= ?",
            (snap_ts, job.batch_id, snap_ts),
        )
        tx.execute(
            "UPDATE outages SET first_seen = ? FROM ft_updates u "
            "WHERE outages.outage_id = u.outage_id AND outages.first_seen > ?",
            (snap_ts, snap_ts),
        )
        tx.unregister("ft_updates")
    dropped = (
        "FROM outages WHERE source = ? AND end_ts IS NULL AND last_seen < ? "
        "AND outage_id NOT IN (SELECT outage_id FROM ft_snapshot)"
    )
    closed = int(tx.scalar(f"SELECT count(*) {dropped}", (source, snap_ts)))
    tx.execute(
        "UPDATE outages SET end_ts = ? WHERE outage_id IN (SELECT outage_id " + dropped + ")",
        (snap_ts, source, snap_ts),
    )
    tx.unregister("ft_snapshot")
    return {"inserted": new.height, "updated": upd.height, "closed": closed, "snapshot_ts": snap_ts}


def merge_outage_snapshot(
    store: Store,
    path: Path,
    settings: Settings,
    opts: IngestOptions,
    snapshot_ts: datetime | None = None,
) -> SnapshotResult:
    """Upsert one snapshot file into ``outages`` in one transaction: the ingest machine with
    the ``snapshot`` writer. ``snapshot_ts`` defaults to the latest start in the file."""
    r = ingest_file(
        store,
        "outages",
        path,
        settings,
        replace(
            opts,
            fmt=opts.fmt or "geojson",
            write="snapshot",
            source_name=opts.source_name or "geojson",
        ),
        observed_at=snapshot_ts,
    )
    d = r.details
    observed = d.get("snapshot_ts") or store.scalar(
        "SELECT started_at FROM ingest_batches WHERE batch_id = ?", [r.batch_id]
    )
    return SnapshotResult(
        r.batch_id,
        observed,
        r.rows_read,
        int(d.get("inserted", 0)),
        int(d.get("updated", 0)),
        int(d.get("closed", 0)),
        r.rows_quarantined,
        r.reasons,
        skipped=r.skipped,
    )


register("outages", "geojson", read_geojson)
register_writer("outages", "snapshot", merge_snapshot_rows)
