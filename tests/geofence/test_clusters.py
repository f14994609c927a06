"""Cluster rules, rolling ring counts, significance, merging and explanations."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import h3
import numpy as np
import polars as pl
import polars_h3 as plh3
import pytest
import shapely

from geofence.clusters import (
    FIRING_SCHEMA,
    ClusterInputError,
    ClusterRule,
    ClusterRuleError,
    classify,
    classify_clusters,
    evaluate,
    evaluate_many,
    explain,
    fit_baseline,
    load_rules,
    merge_adjacent,
    poisson_upper_tail,
    prepare_tickets,
    rolling_ring_counts,
    touched_cells,
)
from geofence.errors import GeofenceError

T0 = datetime(2024, 3, 4, tzinfo=UTC)  # a Monday
CENTRE = (40.75, -73.95)
WINDOW = timedelta(hours=72)


# --------------------------------------------------------------------------- builders


def make_tickets(
    points: Sequence[tuple[float | None, float | None, float, str | None]],
    *,
    id_prefix: str = "t",
    region: str = "east",
) -> pl.DataFrame:
    """Tickets from ``(lat, lon, hours after T0, tag)`` tuples, in the frame contract."""
    return pl.DataFrame(
        {
            "ticket_id": [f"{id_prefix}{i:05d}" for i in range(len(points))],
            "created_ts": [T0 + timedelta(hours=p[2]) for p in points],
            "lat": [p[0] for p in points],
            "lon": [p[1] for p in points],
            "tag": [p[3] for p in points],
            "region": [region] * len(points),
        },
        schema={
            "ticket_id": pl.String,
            "created_ts": pl.Datetime("us", "UTC"),
            "lat": pl.Float64,
            "lon": pl.Float64,
            "tag": pl.String,
            "region": pl.String,
        },
    )


def make_background(
    seed: int,
    *,
    per_day: float,
    days: float,
    tags: Sequence[str],
    spread_deg: float = 0.25,
    id_prefix: str = "bg",
) -> pl.DataFrame:
    """Poisson background: uniform over a square around CENTRE and over ``days``."""
    rng = np.random.default_rng(seed)
    n = int(rng.poisson(per_day * days))
    return make_tickets(
        list(
            zip(
                (CENTRE[0] + rng.uniform(-spread_deg, spread_deg, n)).tolist(),
                (CENTRE[1] + rng.uniform(-spread_deg, spread_deg, n)).tolist(),
                rng.uniform(0, days * 24, n).tolist(),
                rng.choice(list(tags), n).tolist(),
                strict=True,
            )
        ),
        id_prefix=id_prefix,
    )


def make_burst(
    n: int,
    *,
    at: tuple[float, float] = CENTRE,
    first_h: float,
    span_h: float,
    tag: str = "refrigerant_leak",
    id_prefix: str = "burst",
) -> pl.DataFrame:
    """``n`` tickets at one point spread evenly over ``[first_h, first_h + span_h]``."""
    hours = np.linspace(first_h, first_h + span_h, n) if n > 1 else np.array([first_h])
    return make_tickets([(at[0], at[1], float(h), tag) for h in hours], id_prefix=id_prefix)


def make_rule(**overrides: object) -> ClusterRule:
    values: dict[str, object] = {"tag": "refrigerant_leak", "more_than": 19, "version": "v1"}
    values.update(overrides)
    return ClusterRule(**values)  # type: ignore[arg-type]


def brute_force_count(
    tickets: pl.DataFrame, *, tag: str, cell: str, k_ring: int, end: datetime, window: timedelta
) -> int:
    """Reference count with plain h3-py, one ticket at a time."""
    ring = set(h3.grid_disk(cell, k_ring))
    resolution = h3.get_resolution(cell)
    return sum(
        1
        for row in tickets.iter_rows(named=True)
        if row["tag"] == tag
        and row["lat"] is not None
        and h3.latlng_to_cell(row["lat"], row["lon"], resolution) in ring
        and end - window < row["created_ts"] <= end
    )


# --------------------------------------------------------------------------- rules


def test_load_rules_builds_rules_and_reads_window_hours() -> None:
    rules = load_rules(
        [
            {"tag": "refrigerant_leak", "more_than": 19, "version": "v3", "window_h": 48},
            {"tag": "breaker_trip", "more_than": 5, "version": "v1", "fire_on": "either"},
        ],
        known_tags={"refrigerant_leak", "breaker_trip"},
    )
    assert rules[0].window == timedelta(hours=48)
    assert rules[0].min_count_to_fire == 20
    assert rules[1].fire_on == "either"
    assert rules[1].resolution == 7


def test_unknown_tag_names_index_tag_and_known_tags() -> None:
    rules = [
        {"tag": "refrigerant_leak", "more_than": 19, "version": "v1"},
        {"tag": "refridgerant_leak", "more_than": 19, "version": "v1"},
    ]
    with pytest.raises(ClusterRuleError) as info:
        load_rules(rules, known_tags={"refrigerant_leak", "breaker_trip"})
    message = str(info.value)
    assert "cluster rule #1" in message
    assert "'refridgerant_leak'" in message
    assert "['breaker_trip', 'refrigerant_leak']" in message
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, GeofenceError)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"more_than": 19, "version": "v1"}, "missing required key(s) ['tag']"),
        ({"tag": "a", "more_than": 19, "version": "v1", "colour": 1}, "unknown key(s) ['colour']"),
        ({"tag": "a", "more_than": 19, "version": "v1", "window_h": "3d"}, "window_h='3d'"),
        ({"tag": "a", "more_than": 19, "version": "v1", "window_h": 0}, "window=0:00:00"),
        ({"tag": "a", "more_than": -1, "version": "v1"}, "more_than=-1 is negative"),
        ({"tag": "a", "more_than": 1, "version": "v1", "resolution": 16}, "resolution=16"),
        ({"tag": "a", "more_than": 1, "version": "v1", "k_ring": -1}, "k_ring=-1"),
        ({"tag": "a", "more_than": 1, "version": "v1", "fire_on": "always"}, "fire_on='always'"),
        ({"tag": "a", "more_than": 1, "version": "v1", "p_value_max": 1.5}, "p_value_max=1.5"),
        ({"tag": "a", "more_than": 1, "version": ""}, "version is empty"),
    ],
)
def test_load_rules_rejects(raw: dict[str, object], fragment: str) -> None:
    with pytest.raises(ClusterRuleError, match="cluster rule #0") as info:
        load_rules([raw], known_tags={"a"})
    assert fragment in str(info.value)


def test_load_rules_rejects_duplicates() -> None:
    rule = {"tag": "a", "more_than": 1, "version": "v1"}
    with pytest.raises(ClusterRuleError, match=r"cluster rule #1: duplicates rule #0"):
        load_rules([rule, rule], known_tags={"a"})


# --------------------------------------------------------------------------- prepare


def test_prepare_tickets_counts_every_skip_reason() -> None:
    tickets = make_tickets(
        [
            (40.7, -73.9, 1, "refrigerant_leak"),
            (None, -73.9, 1, "refrigerant_leak"),
            (40.7, float("nan"), 1, "refrigerant_leak"),
            (123.4, -73.9, 1, "refrigerant_leak"),
            (40.7, -73.9, 1, None),
            (40.7, -73.9, 1, ""),
            (None, None, 1, None),  # first failing predicate wins: location
        ]
    )
    usable, skipped = prepare_tickets(tickets, [7, 9])
    assert skipped == {"missing_location": 3, "invalid_location": 1, "missing_tag": 2}
    assert usable["ticket_id"].to_list() == ["t00000"]
    assert usable["h3_r7"][0] == h3.str_to_int(h3.latlng_to_cell(40.7, -73.9, 7))
    assert "h3_r9" in usable.columns
    assert usable.height + sum(skipped.values()) == tickets.height


def test_prepare_tickets_names_missing_columns() -> None:
    with pytest.raises(ClusterInputError, match=r"missing column\(s\) \['region'\]"):
        prepare_tickets(make_tickets([]).drop("region"), [7])


# --------------------------------------------------------------------------- rolling counts


@pytest.mark.parametrize("k_ring", [0, 1, 2])
@pytest.mark.parametrize("window_h", [6, 72])
def test_rolling_ring_counts_match_brute_force(k_ring: int, window_h: int) -> None:
    tickets = make_background(3, per_day=40, days=6, tags=["a", "b"], spread_deg=0.08)
    usable, _ = prepare_tickets(tickets, [7])
    eval_times = [T0 + timedelta(hours=h) for h in (24, 61.5, 96, 143)]
    counts = rolling_ring_counts(
        usable,
        tag="a",
        resolution=7,
        k_ring=k_ring,
        window=timedelta(hours=window_h),
        eval_times=eval_times,
        min_count=0,
    )
    sample = counts.sample(40, seed=1) if counts.height > 40 else counts
    for row in sample.iter_rows(named=True):
        expected = brute_force_count(
            tickets,
            tag="a",
            cell=h3.int_to_str(row["cell"]),
            k_ring=k_ring,
            end=row["eval_ts"],
            window=timedelta(hours=window_h),
        )
        assert row["count"] == expected
    # every cell that holds an "a" ticket in some window appears with its count > 0
    positive = counts.filter(pl.col("count") > 0)
    assert positive.height > 0
    assert counts.schema == pl.Schema(
        {"cell": pl.UInt64, "eval_ts": pl.Datetime("us", "UTC"), "count": pl.Int64}
    )


@pytest.mark.parametrize(
    ("ticket_hour", "counted"),
    [
        (0.0, False),  # exactly at t - window: outside (t - window, t]
        (0.001, True),
        (72.0, True),  # exactly at t: inside
        (72.001, False),
    ],
)
def test_window_is_open_left_closed_right(ticket_hour: float, counted: bool) -> None:
    tickets = make_tickets([(*CENTRE, ticket_hour, "a")])
    counts = rolling_ring_counts(
        tickets,
        tag="a",
        resolution=7,
        k_ring=0,
        window=WINDOW,
        eval_times=[T0 + WINDOW],
    )
    assert (counts.height == 1) is counted


def test_rolling_ring_counts_reject_naive_times() -> None:
    with pytest.raises(ClusterInputError, match="naive"):
        rolling_ring_counts(
            make_tickets([(*CENTRE, 1, "a")]),
            tag="a",
            resolution=7,
            k_ring=1,
            window=WINDOW,
            eval_times=[datetime(2024, 3, 5)],
        )


# --------------------------------------------------------------------------- evaluate


@pytest.mark.parametrize(("n_tickets", "fires"), [(19, False), (20, True)])
def test_threshold_boundary_more_than_19(n_tickets: int, fires: bool) -> None:
    burst = make_burst(n_tickets, first_h=100, span_h=48)
    firing = evaluate(burst, [make_rule()], at=T0 + timedelta(hours=150), history_start=T0)
    centre = h3.str_to_int(h3.latlng_to_cell(*CENTRE, 7))
    assert (centre in firing["cell"].to_list()) is fires
    if fires:
        assert firing.filter(pl.col("cell") == centre)["count"].item() == 20
        assert set(firing["threshold"].to_list()) == {20}


def test_planted_cluster_raises_exactly_one_cluster_with_its_members() -> None:
    days = 30
    background = make_background(
        11, per_day=120, days=days, tags=["refrigerant_leak", "breaker_trip"]
    )
    burst = make_burst(25, first_h=days * 24 - 60, span_h=55)
    tickets = pl.concat([background, burst])
    at = T0 + timedelta(days=days)
    rule = make_rule(fire_on="both")
    usable, skipped = prepare_tickets(tickets, [rule.resolution])
    assert sum(skipped.values()) == 0

    clusters = merge_adjacent(evaluate(usable, [rule], at=at, history_start=T0))

    assert clusters.height == 1
    cluster = clusters.row(0, named=True)
    centre_hex = h3.latlng_to_cell(*CENTRE, 7)
    assert {h3.int_to_str(c) for c in cluster["cells"]} == set(h3.grid_disk(centre_hex, 1))
    assert cluster["p_value"] < 1e-6
    (explanation,) = explain(clusters, usable)
    in_cells = (
        background.with_columns(cell=plh3.latlng_to_cell("lat", "lon", 7, return_dtype=pl.Utf8))
        .filter(
            pl.col("cell").is_in(explanation["cells"])
            & (pl.col("tag") == "refrigerant_leak")
            & (pl.col("created_ts") > at - WINDOW)
        )["ticket_id"]
        .to_list()
    )
    assert explanation["ticket_ids"] == sorted(burst["ticket_id"].to_list() + in_cells)
    assert explanation["member_count"] == 25 + len(in_cells)
    assert explanation["cluster_key"] == f"refrigerant_leak:{min(explanation['cells'])}"


def test_explain_carries_geometry_hourly_counts_and_rule() -> None:
    burst = make_burst(24, first_h=10, span_h=23)
    rule = make_rule(version="v7")
    at = T0 + timedelta(hours=40)
    clusters = merge_adjacent(evaluate(burst, [rule], at=at, history_start=T0 - WINDOW))
    (e,) = explain(clusters, burst)
    geometry = shapely.from_wkt(e["geometry_wkt"])
    assert geometry.geom_type == "MultiPolygon"
    assert geometry.contains(shapely.Point(CENTRE[1], CENTRE[0]))
    assert e["centroid_lat"] == pytest.approx(CENTRE[0], abs=0.01)
    assert sum(h["count"] for h in e["counts_by_hour"]) == e["member_count"] == 24
    assert [h["hour"] for h in e["counts_by_hour"]] == [
        T0 + timedelta(hours=h) for h in range(10, 34)
    ]
    assert (e["rule_version"], e["threshold"], e["window_end"]) == ("v7", 20, at)
    assert e["window_start"] == at - WINDOW
    assert e["recurrence_days"] == pytest.approx(3 / e["p_value"])


NULL_TAGS = ("refrigerant_leak", "breaker_trip", "compressor_noise")


def test_null_world_gives_at_most_one_false_cluster_per_tag() -> None:
    """30 days of pure Poisson background (~550 res-7 rings per tag), evaluated at day 30."""
    days = 30
    usable, _ = prepare_tickets(make_background(2024, per_day=300, days=days, tags=NULL_TAGS), [7])
    rules = [make_rule(tag=t, more_than=10_000, fire_on="significance") for t in NULL_TAGS]
    firing = evaluate(usable, rules, at=T0 + timedelta(days=days), history_start=T0)
    per_tag = merge_adjacent(firing).group_by("tag").len()
    assert per_tag.filter(pl.col("len") > 1).height == 0, per_tag


def test_null_world_false_alarm_rate_is_near_nominal() -> None:
    """Over every (cell, 6-hourly time) of a week the share with p <= 0.001 stays near 0.001.

    This is the per-test rate; a region scanned hourly still sees about
    cells x independent windows x 0.001 false cells (see the module notes on multiplicity).
    """
    days = 30
    usable, _ = prepare_tickets(make_background(7, per_day=100, days=days, tags=["a"]), [7])
    history_end = T0 + timedelta(days=20)
    baseline = fit_baseline(
        usable, tag="a", resolution=7, k_ring=1, history_start=T0, history_end=history_end
    )
    eval_times = [history_end + WINDOW + timedelta(hours=h) for h in range(0, 7 * 24 + 1, 6)]
    counts = rolling_ring_counts(
        usable,
        tag="a",
        resolution=7,
        k_ring=1,
        window=WINDOW,
        eval_times=eval_times,
        min_count=0,
    )
    expected = baseline.rates_for(counts["cell"].to_numpy().astype(np.uint64)) * (
        baseline.effective_hours(counts["eval_ts"].dt.epoch("us").to_numpy(), WINDOW)
    )
    p = poisson_upper_tail(counts["count"].to_numpy(), expected)
    assert counts["count"].mean() == pytest.approx(expected.mean(), rel=0.1)
    assert (p <= 0.001).mean() <= 0.002
    # evaluate() prunes hopeless cells before computing p: it must find exactly these
    rule = make_rule(tag="a", more_than=10_000, fire_on="significance")
    firing = evaluate_many(usable, [rule], eval_times=eval_times, baselines={rule: baseline})
    brute = counts.filter(pl.Series(p <= 0.001)).select("cell", "eval_ts").sort("eval_ts", "cell")
    assert firing.select("cell", "eval_ts").equals(brute)
    assert firing.height > 0


def test_baseline_never_expects_zero_and_shrinks_toward_prior() -> None:
    history = make_background(5, per_day=200, days=21, tags=["a"], spread_deg=0.1)
    baseline = fit_baseline(
        history,
        tag="a",
        resolution=7,
        k_ring=1,
        history_start=T0,
        history_end=T0 + timedelta(days=21),
    )
    far_away = np.array([h3.str_to_int(h3.latlng_to_cell(10.0, 10.0, 7))], dtype=np.uint64)
    assert baseline.rates_for(far_away)[0] == pytest.approx(baseline.prior_rate_per_h)
    assert baseline.prior_rate_per_h > 0
    assert baseline.rate_per_h.min() > 0
    assert baseline.hour_of_week_factor.shape == (168,)
    assert float(baseline.effective_hours(np.array([0], dtype=np.int64), WINDOW)[0]) > 0
    empty = fit_baseline(
        history.head(0),
        tag="a",
        resolution=7,
        k_ring=1,
        history_start=T0,
        history_end=T0 + timedelta(days=1),
    )
    assert empty.rates_for(far_away)[0] == pytest.approx(1e-3)


@pytest.mark.parametrize(
    ("observed", "expected", "p"),
    [
        (0, 2.0, 1.0),
        (1, 2.0, 1 - np.exp(-2.0)),
        (3, 0.5, 1 - np.exp(-0.5) * (1 + 0.5 + 0.125)),
    ],
)
def test_poisson_upper_tail(observed: int, expected: float, p: float) -> None:
    got = poisson_upper_tail(np.array([observed]), np.array([expected]))
    assert got[0] == pytest.approx(p)


def test_evaluate_needs_a_baseline_or_history() -> None:
    with pytest.raises(ClusterInputError, match="no baseline given"):
        evaluate_many(make_burst(3, first_h=1, span_h=1), [make_rule()], eval_times=[T0])


def test_incremental_equals_full_evaluation_on_touched_cells() -> None:
    days = 14
    state = make_background(
        8, per_day=400, days=days, tags=["refrigerant_leak", "other"], spread_deg=0.15
    )
    state = pl.concat([state, make_burst(18, first_h=days * 24 - 40, span_h=30)])
    batch = pl.concat(
        [
            make_burst(6, first_h=days * 24 + 0.1, span_h=0.8, id_prefix="new"),
            make_background(
                9,
                per_day=24 * 30,
                days=1 / 24,
                tags=["refrigerant_leak", "other"],
                spread_deg=0.15,
                id_prefix="nb",
            ).with_columns(pl.col("created_ts") + timedelta(days=days)),
        ]
    )
    everything, _ = prepare_tickets(pl.concat([state, batch]), [7])
    rule = make_rule(more_than=5, fire_on="either")
    at = T0 + timedelta(days=days, hours=1)
    baselines = {
        rule: fit_baseline(
            everything,
            tag=rule.tag,
            resolution=7,
            k_ring=1,
            history_start=T0,
            history_end=at - WINDOW,
        )
    }
    incremental = evaluate(
        everything, [rule], at=at, history_start=T0, baselines=baselines, touched_by=batch
    )
    full = evaluate(everything, [rule], at=at, history_start=T0, baselines=baselines)
    touched = touched_cells(batch, rule)
    assert incremental.height > 0
    assert incremental.equals(full.filter(pl.col("cell").is_in(pl.Series(touched).implode())))
    # and the counts of the touched cells agree cell by cell
    counts = rolling_ring_counts(
        everything,
        tag=rule.tag,
        resolution=7,
        k_ring=1,
        window=WINDOW,
        eval_times=[at],
        cells=touched,
    )
    assert set(counts["cell"].to_list()) <= set(touched.tolist())


# --------------------------------------------------------------------------- merge


def make_firing(cells: Sequence[str], *, tag: str = "a", count: int = 30) -> pl.DataFrame:
    at = T0 + WINDOW
    n = len(cells)
    return pl.DataFrame(
        {
            "tag": [tag] * n,
            "rule_version": ["v1"] * n,
            "resolution": [h3.get_resolution(c) for c in cells],
            "k_ring": [1] * n,
            "cell": [h3.str_to_int(c) for c in cells],
            "window_start": [T0] * n,
            "eval_ts": [at] * n,
            "count": [count + i for i in range(n)],
            "threshold": [20] * n,
            "expected": [3.0] * n,
            "p_value": [1e-5 / (i + 1) for i in range(n)],
            "recurrence_days": [3e5 * (i + 1) for i in range(n)],
            "over_threshold": [True] * n,
            "significant": [True] * n,
        },
        schema=FIRING_SCHEMA,
    )


ORIGIN = h3.latlng_to_cell(*CENTRE, 8)
NEIGHBOUR = sorted(h3.grid_ring(ORIGIN, 1))[0]
TWO_AWAY = sorted(h3.grid_ring(ORIGIN, 2))[0]
FAR = h3.latlng_to_cell(40.60, -73.80, 8)


@pytest.mark.parametrize(
    ("cells", "expected_groups"),
    [
        ([ORIGIN], [[ORIGIN]]),
        ([ORIGIN, NEIGHBOUR], [[ORIGIN, NEIGHBOUR]]),
        ([ORIGIN, TWO_AWAY], [[ORIGIN], [TWO_AWAY]]),
        ([ORIGIN, FAR, NEIGHBOUR], [[ORIGIN, NEIGHBOUR], [FAR]]),
        # a chain: two_away - (its neighbour next to origin's neighbour) - ... merged via paths
        (list(h3.grid_disk(ORIGIN, 2)), [list(h3.grid_disk(ORIGIN, 2))]),
    ],
)
def test_merge_adjacent_connects_neighbours(
    cells: list[str], expected_groups: list[list[str]]
) -> None:
    clusters = merge_adjacent(make_firing(cells))
    got = sorted(sorted(h3.int_to_str(c) for c in group) for group in clusters["cells"])
    assert got == sorted(sorted(group) for group in expected_groups)
    for row in clusters.iter_rows(named=True):
        assert row["cluster_key"] == f"a:{min(h3.int_to_str(c) for c in row['cells'])}"
        assert row["n_cells"] == len(row["cells"])


def test_merge_adjacent_keeps_tags_apart_and_reports_the_most_significant_cell() -> None:
    firing = pl.concat([make_firing([ORIGIN, NEIGHBOUR], tag="a"), make_firing([ORIGIN], tag="b")])
    clusters = merge_adjacent(firing)
    assert clusters["tag"].to_list() == ["a", "b"]
    a = clusters.row(0, named=True)
    assert a["p_value"] == pytest.approx(5e-6)
    assert a["peak_cell"] == h3.str_to_int(NEIGHBOUR)
    assert a["max_count"] == 31


def test_merge_adjacent_on_nothing_is_empty() -> None:
    assert merge_adjacent(pl.DataFrame(schema=FIRING_SCHEMA)).height == 0


# --------------------------------------------------------------------------- classify


@pytest.mark.parametrize(
    ("previous", "current", "trend"),
    [
        (None, 25, "new"),
        (20, 25, "growing"),
        (20, 21, "steady"),
        (20, 22, "steady"),
        (20, 23, "growing"),
        (20, 17, "fading"),
        (20, 18, "steady"),
        (20, 0, "fading"),
        (0, 0, "steady"),
    ],
)
def test_classify(previous: int | None, current: int, trend: str) -> None:
    assert classify(previous, current) == trend


def test_classify_clusters_matches_classify_row_by_row() -> None:
    previous = pl.DataFrame({"cluster_key": ["a:1", "a:2", "a:3"], "member_count": [20, 20, 9]})
    current = pl.DataFrame({"cluster_key": ["a:1", "a:2", "a:4"], "member_count": [30, 20, 21]})
    out = classify_clusters(current, previous)
    assert out.rows() == [
        ("a:1", 20, 30, "growing"),
        ("a:2", 20, 20, "steady"),
        ("a:3", 9, 0, "fading"),
        ("a:4", None, 21, "new"),
    ]
    for key, prev, cur, trend in out.rows():
        assert classify(prev, cur) == trend, key


# --------------------------------------------------------------------------- real data


def read_nyc311(realdata: Path) -> pl.DataFrame:
    """NYC 311 sample in the tickets contract: complaint type as tag, borough as region."""
    raw = pl.read_csv(realdata / "nyc311_sample" / "nyc311_1000.csv", infer_schema_length=0)
    return raw.select(
        ticket_id=pl.col("Unique Key"),
        created_ts=pl.col("Created Date")
        .str.strptime(pl.Datetime("us"), "%m/%d/%Y %I:%M:%S %p")
        .dt.replace_time_zone("America/New_York", ambiguous="earliest", non_existent="null")
        .dt.convert_time_zone("UTC"),
        lat=pl.col("Latitude").cast(pl.Float64),
        lon=pl.col("Longitude").cast(pl.Float64),
        tag=pl.col("Complaint Type"),
        region=pl.col("Borough"),
    ).drop_nulls("created_ts")


@pytest.mark.realdata
@pytest.mark.parametrize("k_ring", [0, 1])
def test_nyc311_clusters_by_complaint_type_match_plain_polars(realdata: Path, k_ring: int) -> None:
    tickets = read_nyc311(realdata)
    usable, skipped = prepare_tickets(tickets, [7])
    assert skipped["missing_location"] == 107  # PROVENANCE.md: 107 rows have no lat/lon
    at = datetime(2019, 9, 9, tzinfo=UTC)
    window = at - datetime(2014, 1, 1, tzinfo=UTC)  # the whole sample in one window
    tags = sorted(usable["tag"].unique().to_list())
    rules = [
        ClusterRule(tag=t, more_than=4, version="nyc", resolution=7, k_ring=k_ring, window=window)
        for t in tags
    ]
    firing = evaluate(usable, rules, at=at, history_start=at - 2 * window)

    # independent: plain polars group_by over cells (and their rings when k_ring = 1)
    located = tickets.drop_nulls(["lat", "lon"]).with_columns(
        cell=plh3.latlng_to_cell("lat", "lon", 7)
    )
    spread = located.with_columns(centre=plh3.grid_disk("cell", k_ring)).explode("centre")
    expected = (
        spread.group_by("tag", "centre")
        .agg(count=pl.len())
        .filter(pl.col("count") > 4)
        .sort("tag", "centre")
    )
    got = firing.select("tag", centre="cell", count="count").sort("tag", "centre")
    assert got.equals(expected.cast({"count": pl.Int64}))
    assert got.height > 0
    if k_ring == 0:
        clusters = merge_adjacent(firing)
        explanations = explain(clusters, usable)
        assert sum(e["member_count"] for e in explanations) == int(got["count"].sum())
