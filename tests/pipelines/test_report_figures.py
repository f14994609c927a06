"""The trend report's figures on the demo world: the page's queries against independent
polars computations on the store, against the manifest's planted truths, and the planted
causes in the breakdowns (the checklist flags the missing-part cause before the visit)."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from typing import Any

import h3
import polars as pl
import pytest

from pipelines.generate.build import build_world
from pipelines.generate.world import report_truths
from pipelines.store.gateway import Store
from pipelines.views import report as views
from pipelines.views.checklist import ChecklistInputs, build_checklist, legacy_unit_parts
from pipelines.views.ticket import checklist_inputs, ticket


@pytest.fixture(scope="module")
def frames(demo_world: tuple[Any, Any]) -> dict[str, pl.DataFrame]:
    settings, _ = demo_world
    with Store(settings.store_path, read_only=True) as store:
        return {
            "tickets": store.query("SELECT * FROM tickets"),
            "events": store.query("SELECT ticket_id, event_type, ts FROM ticket_events"),
        }


@pytest.fixture(scope="module")
def page(demo_world: tuple[Any, Any]) -> dict[str, views.Breakdown]:
    settings, _ = demo_world
    with Store(settings.store_path, read_only=True) as store:
        return {b.figure: b for b in views.report_breakdowns(store)}


def _planted(demo_world: tuple[Any, Any]) -> dict[str, Any]:
    figures: dict[str, Any] = demo_world[1]["planted"]["report_figures"]
    return figures


def _firsts(events: pl.DataFrame) -> pl.DataFrame:
    """Per ticket: first accepted/departed, counts of arrivals, parts requests and chases."""
    first = {
        k: pl.col("ts").filter(pl.col("event_type") == k).min().alias(k)
        for k in ("accepted", "departed")
    }
    count = {
        k: (pl.col("event_type") == k).sum().alias(f"n_{k}")
        for k in ("arrived", "parts_requested", "customer_chased", "closed")
    }
    return events.group_by("ticket_id").agg(*first.values(), *count.values())


# -- the page's figures equal independent computations on the store -------------------------
def test_report_to_create_matches_polars(frames: dict[str, pl.DataFrame], page: Any) -> None:
    t = frames["tickets"].filter(pl.col("reported_ts").is_not_null())
    minutes = (t["created_ts"] - t["reported_ts"]).dt.total_seconds() / 60
    assert page["report → create"].n == t.height > 0
    assert page["report → create"].value == pytest.approx(minutes.mean(), rel=1e-9)
    by = dict(page["report → create"].rows.select("group", "value").iter_rows())
    assert set(by) == set(frames["tickets"]["channel"].unique())
    assert by["phone"] == pytest.approx(minutes.mean(), rel=1e-9)
    assert by["portal"] == by["app"] == 0.0


def test_accept_to_depart_matches_polars(frames: dict[str, pl.DataFrame], page: Any) -> None:
    per = _firsts(frames["events"]).join(
        frames["tickets"].select("ticket_id", "region"), on="ticket_id"
    )
    per = per.filter(pl.col("accepted").is_not_null() & (pl.col("departed") >= pl.col("accepted")))
    hours = (per["departed"] - per["accepted"]).dt.total_seconds() / 3600
    b = page["accept → depart idle"]
    assert b.n == per.height
    assert b.value == pytest.approx(hours.mean(), rel=1e-9)
    mine = per.with_columns(hours.alias("h")).group_by("region").agg(pl.col("h").mean())
    assert dict(b.rows.select("group", "value").iter_rows()) == pytest.approx(
        dict(mine.iter_rows())
    )


def test_missing_part_revisits_match_polars(frames: dict[str, pl.DataFrame], page: Any) -> None:
    per = _firsts(frames["events"]).join(
        frames["tickets"].select("ticket_id", "tag", "tags"), on="ticket_id"
    )
    parts_tags = set(per.filter(pl.col("n_parts_requested") > 0)["tag"])
    parts = per.filter(pl.col("tag").is_in(sorted(parts_tags)))
    revisited = (parts["n_parts_requested"] > 0) & (parts["n_arrived"] >= 2)
    b = page["missing-part revisits"]
    assert b.n == parts.height
    assert b.value == pytest.approx(revisited.mean(), rel=1e-9)


def test_unnoticed_resolution_matches_polars(frames: dict[str, pl.DataFrame], page: Any) -> None:
    per = _firsts(frames["events"]).filter(pl.col("n_closed") > 0)
    b = page["customer-unnoticed resolution"]
    assert b.n == per.height
    assert b.value == pytest.approx((per["n_customer_chased"] == 0).mean(), rel=1e-9)


# -- ... and the manifest's planted truths ---------------------------------------------------
def test_page_figures_recover_the_planted_truths(demo_world: tuple[Any, Any], page: Any) -> None:
    p = _planted(demo_world)
    pairs = [
        ("report → create", p["report_to_create"]["mean_min"]),
        ("accept → depart idle", p["accept_to_depart"]["mean_h"]),
        ("missing-part revisits", p["missing_part_revisits"]["rate"]),
        ("customer-unnoticed resolution", p["unnoticed_resolution"]["rate"]),
    ]
    for figure, planted in pairs:
        assert page[figure].value == pytest.approx(planted, rel=0.01), figure
    with Store(demo_world[0].store_path, read_only=True) as store:
        assert set(p["missing_part_revisits"]["parts_tags"]) == set(views.parts_tags(store))
        legacy = store.query(
            "SELECT ticket_id FROM tickets WHERE list_contains(tags, 'legacy_unit') ORDER BY 1"
        )["ticket_id"].to_list()
    assert legacy == p["missing_part_revisits"]["legacy_ticket_ids"]


def test_breakdowns_hold_the_planted_causes(demo_world: tuple[Any, Any], page: Any) -> None:
    p = _planted(demo_world)
    to_create = page["report → create"].rows.row(0, named=True)
    assert to_create["group"] == p["report_to_create"]["cause"]["channel"]
    idle = page["accept → depart idle"].rows
    assert idle.row(0, named=True)["group"] == p["accept_to_depart"]["cause"]["region"]
    assert idle["value"][0] > 10 * idle["value"][1]  # the batch region, then the rest
    parts = page["missing-part revisits"].rows
    flagged = parts.filter(pl.col("flagged"))
    others = parts.filter(~pl.col("flagged"))
    rate = lambda f: (f["value"] * f["n"]).sum() / f["n"].sum()  # noqa: E731
    assert rate(flagged) > 0.7 > 0.2 > rate(others)
    unnoticed = page["customer-unnoticed resolution"].rows.row(0, named=True)
    assert unnoticed["group"] == p["accept_to_depart"]["cause"]["region"]  # long waits → chases


def test_the_checklist_flags_the_missing_part_cause_before_the_first_visit(
    demo_world: tuple[Any, Any], frames: dict[str, pl.DataFrame]
) -> None:
    settings, _ = demo_world
    per = _firsts(frames["events"]).join(
        frames["tickets"].select("ticket_id", "tags"), on="ticket_id"
    )
    is_legacy = pl.col("tags").list.contains("legacy_unit")
    legacy = per.filter(is_legacy & (pl.col("n_parts_requested") > 0))
    plain = per.filter(~is_legacy).head(5)
    assert legacy.height > 0
    with Store(settings.store_path, read_only=True) as store:
        for row in [*legacy.head(5).iter_rows(named=True), *plain.iter_rows(named=True)]:
            t = ticket(store, row["ticket_id"], mask_personal=False)
            assert t is not None
            items = build_checklist(checklist_inputs(store, t, row["departed"]))
            rules = {i.rule for i in items}
            assert ("legacy_unit_parts" in rules) == ("legacy_unit" in row["tags"]), row[
                "ticket_id"
            ]


def test_revisit_hot_spots_sit_on_the_legacy_estates(demo_world: tuple[Any, Any]) -> None:
    settings, _ = demo_world
    estates = _planted(demo_world)["missing_part_revisits"]["cause"]["estates"]
    with Store(settings.store_path, read_only=True) as store:
        gi = views.revisit_hotspots(store)
    hot = gi.filter(pl.col("hot"))
    assert hot.height > 0
    edge_m = h3.average_hexagon_edge_length(views.HOTSPOT_RESOLUTION, unit="m")

    def near(lat: float, lon: float) -> bool:
        return any(
            h3.great_circle_distance((lat, lon), (e["center_lat"], e["center_lon"]), unit="m")
            <= e["radius_m"] + 3 * edge_m
            for e in estates
        )

    assert all(near(r["lat"], r["lon"]) for r in hot.iter_rows(named=True))
    assert int(hot["count"].sum()) > 0


def test_report_table_says_which_figures_are_reproduced() -> None:
    rows = pl.DataFrame({"group": ["a", "b"], "n": [3, 4], "value": [20.0, 0.0]})
    b = [
        views.Breakdown("report → create", 17.5, 7, "channel", rows),
        views.Breakdown("accept → depart idle", 3.0, 7, "region", rows),
        views.Breakdown("missing-part revisits", None, 0, "tag", rows.clear()),
        views.Breakdown("customer-unnoticed resolution", 0.6, 7, "region", rows),
    ]
    table = views.report_table(b)
    assert table["within_10pct"].to_list() == [True, False, None, None]
    assert table["top_group"].to_list() == ["a", "a", None, "a"]


# -- the full-size demo world reproduces the report within ±10 % ------------------------------
def test_full_demo_world_reproduces_the_report_within_ten_percent() -> None:
    world = build_world(seed=7, scale=1.0, days=30, start=date(2026, 10, 1))
    got = report_truths(world)
    checks = [
        (got["report_to_create"]["mean_min"], 17.0),
        (got["accept_to_depart"]["mean_h"], 4.2),
        (got["missing_part_revisits"]["rate"], 0.31),
    ]
    for value, report in checks:
        assert math.isclose(value, report, rel_tol=0.10), (value, report)


@pytest.mark.parametrize(
    ("tags", "fires"),
    [
        ((), False),
        (("compressor_fault",), False),
        (("compressor_fault", "legacy_unit"), True),
        (("legacy_unit",), True),
        (("legacy",), False),
    ],
)
def test_legacy_unit_rule_table(tags: tuple[str, ...], fires: bool) -> None:
    empty = pl.DataFrame()
    inp = ChecklistInputs(
        visit_ts=datetime(2026, 10, 1, tzinfo=UTC),
        iot=empty,
        outages=empty,
        weather=empty,
        earlier_parts=pl.DataFrame(
            schema={"ticket_id": pl.String, "ts": pl.Datetime, "note": pl.String}
        ),
        tags=tags,
    )
    item = legacy_unit_parts(inp)
    assert (item is not None) == fires
    if item is not None:
        assert item.evidence == {"tag": "legacy_unit"}
        assert item in build_checklist(inp)


def test_idle_by_technician_puts_the_batch_region_first(demo_world: tuple[Any, Any]) -> None:
    settings, manifest = demo_world
    with Store(settings.store_path, read_only=True) as store:
        by_tech = views.accept_to_depart(store, by="technician").rows
        region = dict(store.query("SELECT technician_id, region FROM technicians").iter_rows())
    batch = manifest["planted"]["report_figures"]["accept_to_depart"]["cause"]["region"]
    techs = by_tech["group"].to_list()
    n_batch = sum(region[t] == batch for t in techs)
    assert n_batch > 0
    assert {region[t] for t in techs[:n_batch]} == {batch}  # every batch technician first
