"""Cluster alerts through the store: one alert per cluster, routing, growth, lifecycle."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import h3
import numpy as np
import polars as pl
import pytest

from geofence.restock import haversine_m
from pipelines.alerts.config import AlertConfigError, load_config, parse_config
from pipelines.alerts.orders import OrderNotFoundError, OrderTransitionError
from pipelines.alerts.runner import (
    acknowledge_order,
    cancel_order,
    fulfil_order,
    run_alerts,
)
from pipelines.errors import FieldTraceError
from pipelines.store.gateway import Store

T0 = datetime(2026, 10, 5, tzinfo=UTC)  # a Monday
CENTRE = (30.27, 120.15)
CONFIG = load_config()

# --------------------------------------------------------------------------- builders


def box(lat: float, lon: float, half_deg: float) -> str:
    """A square coverage polygon (lon lat WKT) around a point."""
    lo_lat, hi_lat, lo_lon, hi_lon = lat - half_deg, lat + half_deg, lon - half_deg, lon + half_deg
    return (
        f"POLYGON(({lo_lon} {lo_lat}, {hi_lon} {lo_lat}, {hi_lon} {hi_lat}, "
        f"{lo_lon} {hi_lat}, {lo_lon} {lo_lat}))"
    )


def make_ticket(
    ticket_id: str,
    hours: float,
    *,
    lat: float | None = CENTRE[0],
    lon: float | None = CENTRE[1],
    tag: str | None = "refrigerant_leak",
    start: datetime = T0,
) -> dict[str, Any]:
    return {
        "ticket_id": ticket_id,
        "source": "test",
        "datum_in": "WGS84",
        "lat": lat,
        "lon": lon,
        "tag": tag,
        "tags": None if tag is None else [tag],
        "region": "east",
        "created_ts": start + timedelta(hours=hours),
    }


def planted(
    n: int, *, prefix: str = "leak", first_h: float = 0.0, step_h: float = 2.0
) -> list[dict[str, Any]]:
    """``n`` refrigerant-leak tickets in the centre cell, one every ``step_h`` hours."""
    return [make_ticket(f"{prefix}-{i:03d}", first_h + i * step_h) for i in range(n)]


def background(
    days: int, per_day: float, *, seed: int, tags: Sequence[str], half_deg: float = 0.2
) -> list[dict[str, Any]]:
    """Poisson background: uniform over a box around the centre, uniform in time."""
    rng = np.random.default_rng(seed)
    rows = []
    for tag in tags:
        n = int(rng.poisson(per_day * days))
        hours = rng.uniform(0, days * 24, n)
        lats = CENTRE[0] + rng.uniform(-half_deg, half_deg, n)
        lons = CENTRE[1] + rng.uniform(-half_deg, half_deg, n)
        rows += [
            make_ticket(f"bg-{tag}-{i:05d}", float(h), lat=float(a), lon=float(o), tag=tag)
            for i, (h, a, o) in enumerate(zip(hours, lats, lons, strict=True))
        ]
    return rows


def add_tickets(store: Store, rows: list[dict[str, Any]]) -> None:
    frame = pl.DataFrame(
        rows,
        schema={
            "ticket_id": pl.String,
            "source": pl.String,
            "datum_in": pl.String,
            "lat": pl.Float64,
            "lon": pl.Float64,
            "tag": pl.String,
            "tags": pl.List(pl.String),
            "region": pl.String,
            "created_ts": pl.Datetime("us", "UTC"),
        },
    )
    with store.transaction() as tx:
        tx.insert_frame("tickets", frame)


def add_warehouses(
    store: Store, rows: list[tuple[str, float, float, str | None, str | None]]
) -> None:
    frame = pl.DataFrame(
        rows,
        schema=["warehouse_id", "lat", "lon", "coverage_wkt", "webhook_url"],
        orient="row",
    )
    with store.transaction() as tx:
        tx.insert_frame("warehouses", frame)


# WH-FAR covers the centre but sits ~55 km away; WH-NEAR is ~5 km away and covers nothing there.
FAR = ("WH-FAR", CENTRE[0] + 0.5, CENTRE[1], box(CENTRE[0] + 0.3, CENTRE[1], 0.45), None)
NEAR = ("WH-NEAR", CENTRE[0] + 0.045, CENTRE[1], box(CENTRE[0] + 2, CENTRE[1], 0.1), None)


def alerts_of(store: Store) -> pl.DataFrame:
    return store.query("SELECT * FROM cluster_alerts ORDER BY first_seen, alert_id")


def orders_of(store: Store) -> pl.DataFrame:
    return store.query("SELECT * FROM restock_orders ORDER BY created_at, order_id")


# --------------------------------------------------------------------------- tests


def test_planted_cluster_raises_one_alert_routed_by_coverage(store: Store) -> None:
    leak = planted(24)
    bad = [
        make_ticket("no-loc", 3, lat=None, lon=None),
        make_ticket("no-tag", 4, tag=None),
        make_ticket("bad-loc", 5, lat=123.0),
    ]
    add_tickets(store, leak + bad + background(10, 6, seed=1, tags=["compressor_fault"]))
    add_warehouses(store, [FAR, NEAR])
    at = T0 + timedelta(hours=50)

    report = run_alerts(store, CONFIG, at=at)

    assert report.skipped == {"missing_location": 1, "invalid_location": 1, "missing_tag": 1}
    alerts = alerts_of(store)
    assert alerts.height == 1
    alert = alerts.row(0, named=True)
    assert report.opened == [alert["alert_id"]]
    assert sorted(alert["member_ticket_ids"]) == sorted(t["ticket_id"] for t in leak)
    # every centre whose 1-ring holds the planted cell fires; they merge into one cluster
    # whose counted area is those centres and their 1-rings
    planted_cell = h3.latlng_to_cell(*CENTRE, 7)
    assert set(alert["member_cells"]) == set(h3.grid_disk(planted_cell, 2))
    # more_than=19 fires at the 20th ticket: hour 38
    assert alert["crossed_at"] == T0 + timedelta(hours=38)
    assert (alert["status"], alert["trend"], alert["member_count"]) == ("open", "new", 24)
    doc = json.loads(alert["explanation"])
    for key in ("counts_by_hour", "baseline", "p_value", "recurrence_days", "rule", "window"):
        assert key in doc
    assert doc["rule"] == {
        "tag": "refrigerant_leak", "version": CONFIG.version, "more_than": 19, "threshold": 20,
        "window_h": 72.0, "resolution": 7, "k_ring": 1, "fire_on": "rule", "p_value_max": 0.001,
    }  # fmt: skip
    assert sum(h["count"] for h in doc["counts_by_hour"]) == 24
    assert doc["geometry_wkt"].startswith("MULTIPOLYGON")
    assert set(doc["firing_cells"]) == set(h3.grid_disk(planted_cell, 1))
    order = orders_of(store).row(0, named=True)
    assert (order["warehouse_id"], order["routed_by"]) == ("WH-FAR", "coverage")
    assert (order["sku"], order["unit"], order["status"]) == ("R32", "kg", "open")
    assert order["quantity"] == pytest.approx(24 * 1.2)


def test_nearest_warehouse_when_no_coverage_contains_the_cluster(store: Store) -> None:
    add_tickets(store, planted(21))
    far_without_coverage = (*FAR[:3], box(0.0, 0.0, 1.0), None)
    add_warehouses(store, [far_without_coverage, NEAR])
    run_alerts(store, CONFIG, at=T0 + timedelta(hours=45))
    order = orders_of(store).row(0, named=True)
    assert (order["warehouse_id"], order["routed_by"]) == ("WH-NEAR", "nearest")
    alert = alerts_of(store).row(0, named=True)
    expected = haversine_m(
        alert["centroid_lat"], alert["centroid_lon"], np.array([NEAR[1]]), np.array([NEAR[2]])
    )
    assert order["distance_m"] == pytest.approx(float(expected[0]))


def test_a_growing_cluster_updates_its_alert_then_fades_and_closes(store: Store) -> None:
    add_warehouses(store, [FAR])
    add_tickets(store, planted(22, step_h=1.0))  # hours 0..21
    first = run_alerts(store, CONFIG, at=T0 + timedelta(hours=24))
    add_tickets(store, planted(12, prefix="more", first_h=25, step_h=1.0))  # hours 25..36
    grown = run_alerts(store, CONFIG, at=T0 + timedelta(hours=40))

    alerts = alerts_of(store)
    assert alerts.height == 1
    assert grown.mode == "incremental"
    assert grown.updated == first.opened
    assert (alerts["trend"][0], alerts["member_count"][0]) == ("growing", 34)
    orders = orders_of(store)
    assert orders["quantity"].to_list() == pytest.approx([22 * 1.2, 12 * 1.2])
    assert orders["order_id"].str.ends_with("-02").to_list() == [False, True]

    # hour 80: tickets of hours 0..8 left the 72 h window: 25 now, 20+ still fire
    run_alerts(store, CONFIG, at=T0 + timedelta(hours=80))
    row = alerts_of(store).row(0, named=True)
    assert (row["status"], row["trend"], row["member_count"]) == ("open", "fading", 34)
    assert json.loads(row["explanation"])["now"]["member_count"] == 25
    # hour 100: window (28, 100] holds hours 29..36 - 8 tickets, below the threshold
    run_alerts(store, CONFIG, at=T0 + timedelta(hours=100))
    row = alerts_of(store).row(0, named=True)
    assert (row["status"], row["trend"], row["member_count"]) == ("open", "fading", 34)
    now = json.loads(row["explanation"])["now"]
    assert (now["member_count"], now["firing"]) == (8, False)
    # hour 120: the window is empty: closed, the evidence (all 34 members) kept
    last = run_alerts(store, CONFIG, at=T0 + timedelta(hours=120))
    row = alerts_of(store).row(0, named=True)
    assert last.closed == [row["alert_id"]]
    assert (row["status"], row["closed_at"]) == ("closed", T0 + timedelta(hours=120))
    assert len(row["member_ticket_ids"]) == 34
    assert json.loads(row["explanation"])["now"]["member_count"] == 0
    assert orders_of(store).height == 2  # fading never orders more
    actions = store.query(
        "SELECT action FROM audit_log WHERE object_id = ? ORDER BY logged_at", [row["alert_id"]]
    )["action"].to_list()
    assert actions[:2] == ["alert_opened", "alert_growing"]
    assert actions[-1] == "alert_closed_fading"


def test_incremental_and_full_runs_agree(tmp_path: Path) -> None:
    rows = planted(25, step_h=1.5) + background(6, 20, seed=3, tags=["refrigerant_leak"])
    results = []
    for mode in ("incremental", "full"):
        with Store(tmp_path / f"{mode}.duckdb") as store:
            add_warehouses(store, [FAR])
            add_tickets(store, rows)
            for hour in range(0, 144, 6):
                run_alerts(store, CONFIG, at=T0 + timedelta(hours=hour), incremental=mode == "full")
            results.append(
                alerts_of(store).select("member_ticket_ids", "trend", "status", "crossed_at")
            )
    assert results[0].equals(results[1])
    assert results[0].height == 1


def test_null_world_raises_at_most_one_false_alert_per_tag(tmp_path: Path) -> None:
    """30 days of seeded Poisson background (12 tickets/day/tag over ~80 res-7 cells, no
    planted cluster), evaluated every 2 h: the rule thresholds sit far above the noise.

    A claim about the rules, not the backend: it runs on the file store only (its 361
    evaluations took 80-100 s on DuckLake); the lake's alert path has its own [ducklake] tests.
    """
    tags = sorted(CONFIG.tags)
    with Store(tmp_path / "null.duckdb") as store:
        add_tickets(store, background(30, 12, seed=7, tags=tags, half_deg=0.1))
        add_warehouses(store, [FAR])
        for hour in range(0, 30 * 24 + 1, 2):
            run_alerts(store, CONFIG, at=T0 + timedelta(hours=hour))
        per_tag = store.query("SELECT tag, count(*) AS n FROM cluster_alerts GROUP BY tag")
        runs = store.count("alert_runs")
    assert all(n <= 1 for n in per_tag["n"].to_list()), per_tag
    assert runs == 361
    assert {r.fire_on for r in CONFIG.rules if r.tag != "compressor_fault"} == {"rule"}


def test_unknown_tag_fails_at_load_time_with_a_clear_message() -> None:
    raw = {
        "version": "v1",
        "tags": ["refrigerant_leak"],
        "cluster_rules": [{"tag": "refrigerant_leek", "more_than": 19, "window_h": 72}],
    }
    with pytest.raises(AlertConfigError, match=r"refrigerant_leek.*not a known tag") as info:
        parse_config(raw)
    assert isinstance(info.value, ValueError)
    assert "refrigerant_leak" in str(info.value)  # the known tags are listed
    raw = {**raw, "cluster_rules": [], "restock": [{"tag": "x", "sku": "s", "usage_per_ticket": 1}]}
    with pytest.raises(AlertConfigError, match=r"restock #0: tag='x' is not a known tag"):
        parse_config(raw)


def test_rules_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("version = 'v1'\ntags = 'refrigerant_leak'\n")
    with pytest.raises(AlertConfigError, match=rf"{path.name}: tags='refrigerant_leak'"):
        load_config(path)
    with pytest.raises(AlertConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def _sent_order(store: Store) -> str:
    add_tickets(store, planted(20))
    add_warehouses(store, [FAR])
    run_alerts(store, CONFIG, at=T0 + timedelta(hours=40))
    order_id = str(orders_of(store)["order_id"][0])
    store.execute("UPDATE restock_orders SET status = 'sent', sent_at = ? WHERE order_id = ?",
                  [T0, order_id])  # fmt: skip
    return order_id


def test_order_lifecycle_is_timed_and_audited(store: Store) -> None:
    order_id = _sent_order(store)
    acknowledge_order(store, order_id, "wh-clerk", at=T0 + timedelta(hours=41))
    fulfil_order(store, order_id, "wh-clerk", at=T0 + timedelta(hours=45))
    order = orders_of(store).row(0, named=True)
    assert order["status"] == "fulfilled"
    assert order["acknowledged_at"] == T0 + timedelta(hours=41)
    assert order["fulfilled_at"] == T0 + timedelta(hours=45)
    audit = store.query(
        "SELECT logged_at, action, detail FROM audit_log WHERE object_id = ? AND actor = ? "
        "ORDER BY logged_at",
        [order_id, "wh-clerk"],
    )
    assert audit["action"].to_list() == ["order_acknowledged", "order_fulfilled"]
    assert audit["logged_at"].to_list() == [order["acknowledged_at"], order["fulfilled_at"]]
    assert [json.loads(d)["previous"] for d in audit["detail"]] == ["sent", "acknowledged"]


def _cancel(store: Store, order_id: str, actor: str) -> None:
    cancel_order(store, order_id, actor, reason="too late")


# (steps before, the invalid step, fragment of the message)
INVALID = [
    ([], fulfil_order, "is 'sent'; cannot move to 'fulfilled' (allowed from: acknowledged)"),
    ([acknowledge_order], acknowledge_order, "is 'acknowledged'; cannot move to 'acknowledged'"),
    ([acknowledge_order, fulfil_order], _cancel, "is 'fulfilled'; cannot move to 'cancelled'"),
]


@pytest.mark.parametrize(("before", "step", "fragment"), INVALID)
def test_invalid_transitions_raise_and_write_nothing(
    store: Store, before: list[Any], step: Any, fragment: str
) -> None:
    order_id = _sent_order(store)
    for done in before:
        done(store, order_id, "clerk")
    audit_rows = store.count("audit_log")
    with pytest.raises(OrderTransitionError, match=re.escape(fragment)) as info:
        step(store, order_id, "clerk")
    assert isinstance(info.value, FieldTraceError)
    assert isinstance(info.value, ValueError)
    assert store.count("audit_log") == audit_rows


def test_unknown_order_is_a_key_error(store: Store) -> None:
    with pytest.raises(OrderNotFoundError, match="'RO-nope' does not exist") as info:
        acknowledge_order(store, "RO-nope", "clerk")
    assert isinstance(info.value, KeyError)


def test_generated_world_planted_cluster_raises_exactly_one_alert(tmp_path: Path) -> None:
    """Scale 0.05, seed 7: the planted refrigerant-leak cluster, its tickets and warehouse."""
    from cli.ingest import ingest_world
    from pipelines.generate import generate_world
    from pipelines.generate.manifest import Manifest
    from pipelines.settings import load_settings

    world = tmp_path / "world"
    generate_world(world, seed=7, scale=0.05, days=30)
    manifest = Manifest.load(world / "manifest.json")
    truth = manifest.planted.cluster
    settings = load_settings(store_path=tmp_path / "ft.duckdb", data_dir=tmp_path)
    ingest_world(world, settings)
    with Store(settings.store_path) as store:
        end = store.scalar("SELECT max(created_ts) FROM tickets").astimezone(UTC)
        start = end - timedelta(days=manifest.days)
        for hour in range(0, manifest.days * 24 + 1, 2):  # replay every 2 h of event time
            run_alerts(store, CONFIG, at=start + timedelta(hours=hour))
        leaks = store.query("SELECT * FROM cluster_alerts WHERE tag = ?", [truth["tag"]])
        assert leaks.height == 1
        alert = leaks.row(0, named=True)
        assert set(truth["ticket_ids"]) <= set(
            json.loads(alert["explanation"])["member_ticket_ids"]
        )
        orders = orders_of(store).filter(pl.col("alert_id") == alert["alert_id"])
        region = store.query(
            "SELECT w.warehouse_id FROM warehouses w WHERE ST_Contains(ST_GeomFromText("
            "w.coverage_wkt), ST_Point(?, ?))",
            [truth["center_lon"], truth["center_lat"]],
        )
        assert orders["warehouse_id"].to_list()[:1] == region["warehouse_id"].to_list()
        assert orders["routed_by"][0] == "coverage"
