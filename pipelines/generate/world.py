"""Write a seeded, reproducible demo world as files the ingest path reads, plus its manifest.

``generate_world(out_dir, seed=7, scale=1.0, days=30)`` builds the world in memory
(``pipelines.generate.build``), samples GPS per technician (``pipelines.generate.gps``, whose
docstring documents the error model), plants a few bad rows for the ingest rules and writes:

=====================  ===============  ==================================================
file                   kind             notes
=====================  ===============  ==================================================
warehouses.csv         warehouses       3 regions, coverage WKT, webhook URL
technicians.csv        technicians      skills ';'-joined
uwb_sites.jsonl        uwb_sites        anchors / targets as JSON strings
tickets.csv            tickets          region ``east`` in GCJ-02; + 2 projected rows;
                                        ``channel`` and ``reported_ts`` (phone calls)
events.csv             events           times ISO +08:00; + 2 dup, 1 closed<created, 1 type
gps/part-NNN.parquet   gps              sorted by technician_id, ts; + 10 bad fixes in 000
uwb_positions.parquet  uwb_positions    site frame metres, ~1 Hz while indoors
weather.csv            weather          hourly, 0.1° grid, long format
outages.jsonl          outages          one outage polygon
iot_devices.csv        iot_devices      devices at customer addresses
iot.parquet            iot              long readings every 5–15 min
manifest.json          –                ``Manifest``: counts, expected ingest, planted truths
=====================  ===============  ==================================================

The start date plus ``days`` must lie in the past: the ingest ``time_range`` rule rejects
future times, and ``manifest.expected`` assumes none are.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipelines.generate.bad_rows import (
    TIMEZONE,
    BadRows,
    plant_bad_events,
    plant_bad_fixes,
    plant_bad_tickets,
)
from pipelines.generate.build import (
    CHASE_AFTER_H,
    CHASE_SCALE_H,
    GCJ_REGION,
    World,
    build_world,
    stream,
    world_gps,
)
from pipelines.generate.city import warehouse_rows
from pipelines.generate.geo import REGIONS, region_wkt, to_latlon, wgs84_to_gcj02
from pipelines.generate.manifest import Manifest, Planted
from pipelines.generate.tickets import (
    CATEGORY,
    LEGACY_ESTATE_RADIUS_M,
    LEGACY_ESTATES_XY_M,
    LEGACY_REVISIT_RATE,
    LEGACY_SHARE,
    LEGACY_TAG,
    MORNING_BATCH_CUTOFF_H,
    MORNING_BATCH_REGION,
    PARTS_TAGS,
    PHONE_LAG_MEAN_S,
    PHONE_LAG_SHAPE,
    is_parts_related,
)

GPS_TECHS_PER_PART = 25

INGEST_ORDER: list[tuple[str, str]] = [
    ("warehouses", "warehouses.csv"),
    ("technicians", "technicians.csv"),
    ("uwb_sites", "uwb_sites.jsonl"),
    ("tickets", "tickets.csv"),
    ("events", "events.csv"),
    ("gps", "gps/part-*.parquet"),
    ("uwb_positions", "uwb_positions.parquet"),
    ("weather", "weather.csv"),
    ("outages", "outages.jsonl"),
    ("iot_devices", "iot_devices.csv"),
    ("iot", "iot.parquet"),
]


def _ms(ts_s: Sequence[float] | np.ndarray) -> pl.Series:
    arr = np.round(np.asarray(ts_s, dtype=np.float64) * 1000).astype(np.int64)
    return pl.Series(arr).cast(pl.Datetime("ms", "UTC"))


def iso_local(ts_s: Sequence[float] | np.ndarray) -> pl.Series:
    """Whole-second ISO-8601 times with the +08:00 offset."""
    secs = np.round(np.asarray(ts_s, dtype=np.float64))
    return _ms(secs).dt.convert_time_zone(TIMEZONE).dt.strftime("%Y-%m-%dT%H:%M:%S%:z").alias("ts")


def iso_utc(ts_s: float) -> str:
    return datetime.fromtimestamp(round(ts_s), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- frames ------------------------------------------------------------------------------
def technicians_frame(world: World) -> pl.DataFrame:
    lat, lon = to_latlon([t.home_x_m for t in world.techs], [t.home_y_m for t in world.techs])
    return pl.DataFrame(
        {
            "technician_id": [t.technician_id for t in world.techs],
            "name": [t.name for t in world.techs],
            "region": [t.region for t in world.techs],
            "skills": [";".join(t.skills) for t in world.techs],
            "home_lat": np.round(lat, 6),
            "home_lon": np.round(lon, 6),
        }
    )


def tickets_frame(world: World) -> pl.DataFrame:
    rows = []
    for t in world.tickets:
        c = t.customer
        lat, lon = c.lat, c.lon
        datum = "WGS84"
        if c.region == GCJ_REGION:
            glat, glon = wgs84_to_gcj02(lat, lon)
            lat, lon, datum = float(glat), float(glon), "GCJ02"
        rows.append(
            {
                "ticket_id": t.ticket_id,
                "source": "demo",
                "external_id": f"CRM-{t.key:06d}",
                "customer_id": c.customer_id,
                "customer_name": c.name,
                "address": c.address,
                "lat": round(lat, 7),
                "lon": round(lon, 7),
                "datum": datum,
                "tags": ";".join((t.tag, *t.extra_tags)),
                "tag": t.tag,
                "category": CATEGORY[t.tag],
                "priority": t.priority,
                "region": c.region,
                "site_id": c.site_id,
                "created_ts": t.created_s,
                "channel": t.channel,
                "reported_ts": t.reported_s,
            }
        )
    frame = pl.DataFrame(rows, infer_schema_length=None)
    reported = frame["reported_ts"].fill_null(float("nan")).to_numpy()
    return frame.with_columns(
        iso_local(frame["created_ts"].to_numpy()).alias("created_ts"),
        pl.when(pl.col("reported_ts").is_not_null())
        .then(iso_local(np.nan_to_num(reported)))
        .alias("reported_ts"),
    )


def events_frame(world: World) -> pl.DataFrame:
    cols: dict[str, list[Any]] = {k: [] for k in ("event_id", "ticket_id", "event_type", "ts_s")}
    cols |= {"actor": [], "note": []}
    for t in world.tickets:
        for event_id, kind, ts, actor, note in t.events:
            row = (event_id, t.ticket_id, kind, ts, actor, note or None)
            for k, v in zip(cols, row, strict=True):
                cols[k].append(v)
    frame = pl.DataFrame(cols).sort("ticket_id", "ts_s", "event_id")
    return frame.select(
        "event_id",
        "ticket_id",
        "event_type",
        iso_local(frame["ts_s"].to_numpy()),
        "actor",
        pl.lit("demo").alias("source"),
        "note",
    )


def uwb_frame(world: World) -> pl.DataFrame:
    if not world.uwb:
        return pl.DataFrame()
    frame = pl.concat(
        [
            pl.DataFrame(
                {
                    "site_id": tr.site_id,
                    "tag_id": tr.tag_id,
                    "ts": _ms(tr.ts_s),
                    "x_m": tr.x_m,
                    "y_m": tr.y_m,
                    "z_m": tr.z_m,
                    "error_m": tr.error_m,
                    "n_anchors": np.full(len(tr.ts_s), 5, dtype=np.int64),
                    "source": "demo",
                }
            )
            for tr in world.uwb
        ]
    )
    return frame.sort("site_id", "tag_id", "ts")


# -- manifest ----------------------------------------------------------------------------
def planted(world: World, bad: BadRows) -> Planted:
    by_id = {t.ticket_id: t for t in world.tickets}
    p = Planted(bad_rows=bad, chases=world.chases, reopened=world.reopened)
    for a in world.arrivals:
        c = by_id[a.ticket_id].customer
        rec: dict[str, Any] = {
            "event_id": a.event_id,
            "ticket_id": a.ticket_id,
            "technician_id": a.technician_id,
            "indoor": a.indoor,
            "site_id": a.site_id,
            "target_id": c.target_id,
            "target_x_m": c.target_x_m,
            "target_y_m": c.target_y_m,
            "true_lat": round(a.true_lat, 7),
            "true_lon": round(a.true_lon, 7),
            "true_ts": iso_utc(a.true_ts_s),
            "tapped_ts": iso_utc(a.tap_ts_s),
            "second_visit": a.second_visit,
        }
        p.true_arrivals.append(rec)
        ids = {k: a.__getattribute__(k) for k in ("event_id", "ticket_id", "technician_id")}
        if a.false_distance_m is not None:
            p.false_arrivals.append({**ids, "distance_m": round(a.false_distance_m, 1)})
        elif by_id[a.ticket_id].status_lag and not a.second_visit:
            p.status_lags.append({**ids, "lag_s": round(a.tap_ts_s - a.true_ts_s, 1)})
    for t in world.tickets:
        ev: dict[str, list[tuple[float, str]]] = {
            kind: [] for kind in ("accepted", "departed", "arrived", "parts_requested")
        }
        for event_id, kind, ts, _, _ in t.events:
            if kind in ev:
                ev[kind].append((ts, event_id))
        if t.idle:
            (t_acc, acc_id), (t_dep, dep_id) = ev["accepted"][0], min(ev["departed"])
            p.idle_gaps.append(
                {
                    "ticket_id": t.ticket_id,
                    "technician_id": t.technician_id,
                    "accepted_event_id": acc_id,
                    "departed_event_id": dep_id,
                    "idle_s": round(t_dep - t_acc, 1),
                }
            )
        if t.revisit:
            arr = sorted(ev["arrived"])
            p.revisits.append(
                {
                    "ticket_id": t.ticket_id,
                    "technician_id": t.technician_id,
                    "parts_requested_event_id": ev["parts_requested"][0][1],
                    "first_arrival_event_id": arr[0][1],
                    "second_arrival_event_id": arr[1][1],
                }
            )
    p.report_figures = report_truths(world)
    n_gcj = sum(t.customer.region == GCJ_REGION for t in world.tickets)
    p.gcj_region = {"region": GCJ_REGION, "datum": "GCJ02", "ticket_count": n_gcj}
    cl = dict(world.cluster)
    p.cluster = {
        **{k: v for k, v in cl.items() if not k.endswith("_s")},
        "window_start": iso_utc(cl["window_start_s"]),
        "window_end": iso_utc(cl["window_end_s"]),
    }
    p.rain_hours = [iso_utc(h) for h in world.rain_hours_s]
    o = world.outage
    p.outage = {
        "outage_id": o["outage_id"],
        "ticket_ids": o["ticket_ids"],
        "start": iso_utc(o["start_s"]),
        "end": iso_utc(o["end_s"]),
    }
    for key in ("vibration_fault", "wifi_drop"):
        f = world.faults[key]
        onset = iso_utc(f["onset_s"])
        setattr(p, key, {"device_id": f["device_id"], "ticket_id": f["ticket_id"], "onset": onset})
    return p


def _first(t: Any, kind: str) -> float:
    return min(ts for _, k, ts, _, _ in t.events if k == kind)


def _mean(values: Sequence[float]) -> float | None:
    return round(float(np.mean(values)), 4) if len(values) else None


def report_truths(world: World) -> dict[str, Any]:
    """The trend report's four figures as planted in the world, with their causes.

    Computed on the generated tickets (before the planted bad rows): the ingest quarantines
    only a handful of rows, so the figures on the store differ by a fraction of a percent.
    """
    tickets = world.tickets
    phone = [t for t in tickets if t.reported_s is not None]
    by_channel: dict[str, list[float]] = {}
    for t in tickets:
        lag = 0.0 if t.reported_s is None else (t.created_s - t.reported_s) / 60
        by_channel.setdefault(t.channel, []).append(lag)
    idle_h = {t.ticket_id: (_first(t, "departed") - _first(t, "accepted")) / 3600 for t in tickets}
    by_region: dict[str, list[float]] = {}
    for t in tickets:
        by_region.setdefault(t.customer.region, []).append(idle_h[t.ticket_id])
    parts = [t for t in tickets if is_parts_related(t)]
    legacy = [t for t in parts if LEGACY_TAG in t.extra_tags]
    other = [t for t in parts if LEGACY_TAG not in t.extra_tags]
    estates = []
    for x, y in LEGACY_ESTATES_XY_M:
        elat, elon = to_latlon(x, y)
        estates.append(
            {
                "center_lat": round(float(elat), 6),
                "center_lon": round(float(elon), 6),
                "radius_m": LEGACY_ESTATE_RADIUS_M,
            }
        )
    chased = {c["ticket_id"] for c in world.chases}
    return {
        "report_to_create": {
            "report_value_min": 17.0,
            "cause": {
                "channel": "phone",
                "lag": f"Gamma(shape={PHONE_LAG_SHAPE:g}, mean={PHONE_LAG_MEAN_S / 60:g} min)",
            },
            "phone_tickets": len(phone),
            "mean_min": _mean([(t.created_s - t.reported_s) / 60 for t in phone if t.reported_s]),
            "mean_min_by_channel": {k: _mean(v) for k, v in sorted(by_channel.items())},
        },
        "accept_to_depart": {
            "report_value_h": 4.2,
            "cause": {
                "region": MORNING_BATCH_REGION,
                "policy": "morning batch: accepted on assignment, created after "
                f"{MORNING_BATCH_CUTOFF_H:g}:00 local served the next morning",
            },
            "mean_h": _mean(list(idle_h.values())),
            "mean_h_by_region": {k: _mean(v) for k, v in sorted(by_region.items())},
        },
        "missing_part_revisits": {
            "report_value": 0.31,
            "parts_tags": sorted(PARTS_TAGS),
            "cause": {
                "tag": LEGACY_TAG,
                "checklist_rule": "legacy_unit_parts",
                "estates": estates,
            },
            "parts_tickets": len(parts),
            "revisit_tickets": sum(t.revisit for t in parts),
            "rate": _mean([float(t.revisit) for t in parts]),
            "rate_legacy": _mean([float(t.revisit) for t in legacy]),
            "rate_other": _mean([float(t.revisit) for t in other]),
            "legacy_tickets": len(legacy),
            "legacy_share_planted": LEGACY_SHARE,
            "legacy_revisit_rate_planted": LEGACY_REVISIT_RATE,
            "legacy_ticket_ids": sorted(t.ticket_id for t in legacy),
        },
        "unnoticed_resolution": {
            "definition": "closed tickets with no customer_chased event / closed tickets",
            "closed_tickets": len(tickets),
            "chased_tickets": len(chased),
            "rate": _mean([float(t.ticket_id not in chased) for t in tickets]),
            "cause": {
                "chase": "a customer_chased event: the customer asks about the open ticket",
                "when": f"wait from report to arrival over {CHASE_AFTER_H:g} h, with "
                f"probability 1 - exp(-(wait_h - {CHASE_AFTER_H:g}) / {CHASE_SCALE_H:g})",
            },
        },
    }


def expected(counts: dict[str, int], bad: BadRows) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for kind, pattern in INGEST_ORDER:
        rows = sum(n for f, n in counts.items() if Path(f).match(pattern))
        rules: dict[str, int] = {}
        for b in bad.get(kind, []):
            rules[b["rule"]] = rules.get(b["rule"], 0) + 1
        q = sum(rules.values())
        out[kind] = {"accepted": rows - q, "quarantined": q, "rules": rules}
    return out


# -- the entry point ---------------------------------------------------------------------
def generate_world(
    out_dir: Path,
    *,
    seed: int = 7,
    scale: float = 1.0,
    days: int = 30,
    start: date = date(2026, 10, 1),
    progress: Callable[[str, float], None] | None = None,
) -> Manifest:
    """Generate the demo world into ``out_dir`` (see the module docstring); returns its manifest."""
    say = progress or (lambda _m, _f: None)
    t_begin = time.perf_counter()
    out_dir = Path(out_dir)
    (out_dir / "gps").mkdir(parents=True, exist_ok=True)
    for old in (out_dir / "gps").glob("part-*.parquet"):
        old.unlink()
    world = build_world(seed=seed, scale=scale, days=days, start=start, progress=say)
    rng = stream(seed, "bad")
    bad: BadRows = {}
    counts: dict[str, int] = {}

    def put(name: str, frame: pl.DataFrame) -> None:
        path = out_dir / name
        if name.endswith(".csv"):
            frame.write_csv(path)
        elif name.endswith(".parquet"):
            frame.write_parquet(path, statistics=True)
        else:
            path.write_text("".join(line + "\n" for line in frame.write_ndjson().splitlines()))
        counts[name] = frame.height

    say("writing tables", 0.4)
    put("warehouses.csv", pl.DataFrame(warehouse_rows({r: region_wkt(r) for r in REGIONS})))
    put("technicians.csv", technicians_frame(world))
    put("uwb_sites.jsonl", pl.DataFrame([s.row() for s in world.sites]))
    put("tickets.csv", plant_bad_tickets(tickets_frame(world), bad))
    put("events.csv", plant_bad_events(events_frame(world), rng, bad))
    put("uwb_positions.parquet", uwb_frame(world))
    weather = world.weather.with_columns(pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    put("weather.csv", weather)
    o = world.outage
    put(
        "outages.jsonl",
        pl.DataFrame(
            {
                "outage_id": [o["outage_id"]],
                "source": [o["source"]],
                "geom_wkt": [o["geom_wkt"]],
                "start_ts": iso_local([o["start_s"]]),
                "end_ts": iso_local([o["end_s"]]),
                "customers_affected": [o["customers_affected"]],
                "cause": [o["cause"]],
            }
        ),
    )
    put("iot_devices.csv", pl.DataFrame(world.devices))
    put("iot.parquet", world.iot)
    say("gps", 0.5)
    part: list[pl.DataFrame] = []
    n_parts = 0
    n_techs = len({i for i, _ in world.tracks})

    def flush() -> None:
        nonlocal n_parts
        frame = pl.concat(part)
        name = f"gps/part-{n_parts:03d}.parquet"
        if n_parts == 0:
            frame = plant_bad_fixes(frame, name, bad)
        put(name, frame)
        part.clear()
        n_parts += 1

    for k, (_, frame) in enumerate(world_gps(world)):
        part.append(frame)
        if len(part) == GPS_TECHS_PER_PART:
            flush()
        say("gps", 0.5 + 0.45 * (k + 1) / max(n_techs, 1))
    if part:
        flush()
    manifest = Manifest(
        seed=seed,
        scale=scale,
        days=days,
        start=start.isoformat(),
        timezone=TIMEZONE,
        counts=counts,
        expected=expected(counts, bad),
        planted=planted(world, bad),
    )
    (out_dir / "manifest.json").write_text(manifest.to_json(), encoding="utf-8")
    say(f"done in {time.perf_counter() - t_begin:.1f} s", 1.0)
    return manifest
