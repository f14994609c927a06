"""Fence membership (circles, polygons with holes, edges, overlaps) and ENTER/EXIT events."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from geofence.errors import FenceGeometryError, FrameContractError
from geofence.fences import FenceSet, fence_transitions, stamp_membership
from tests.geofence.builders import LAT0, LON0, make_fences, make_fixes, offset, square_wkt

CIRCLE = {"fence_id": "c5", "kind": "circle", "lat": LAT0, "lon": LON0, "radius_m": 5.0}
SQUARE_WITH_HOLE = {"fence_id": "sq", "kind": "polygon", "wkt": square_wkt(LAT0, LON0, 20, 8)}


def _stamp(
    fences: list[dict[str, object]],
    east_north: list[tuple[float, float]],
    accuracy_m: float | None = 0.0,
    k: float = 1.0,
) -> pl.DataFrame:
    fx = make_fixes(east_north, accuracy_m=accuracy_m, step_s=10)
    return stamp_membership(fx, FenceSet.from_frame(make_fences(fences)), accuracy_k=k)


@pytest.mark.parametrize(
    ("fence", "east_north", "accuracy_m", "distance_m", "inside", "overlaps"),
    [
        (CIRCLE, (0.0, 0.0), 1.0, -5.0, True, True),
        (CIRCLE, (3.0, 4.0), 1.0, 0.0, True, True),  # exactly on the edge
        (CIRCLE, (0.0, 6.0), 1.0, 1.0, False, True),  # outside, accuracy circle overlaps
        (CIRCLE, (0.0, 6.0), 0.5, 1.0, False, False),
        (CIRCLE, (0.0, 6.0), None, 1.0, False, False),  # null accuracy counts as 0
        (CIRCLE, (30.0, 0.0), 40.0, 25.0, False, True),  # accuracy larger than the fence
        (SQUARE_WITH_HOLE, (14.0, 0.0), 1.0, -6.0, True, True),
        (SQUARE_WITH_HOLE, (0.0, 0.0), 1.0, 8.0, False, False),  # in the hole: outside
        (SQUARE_WITH_HOLE, (8.0, 0.0), 1.0, 0.0, True, True),  # on the hole's edge
        (SQUARE_WITH_HOLE, (25.0, 0.0), 6.0, 5.0, False, True),
    ],
)
def test_membership_table(
    fence: dict[str, object],
    east_north: tuple[float, float],
    accuracy_m: float | None,
    distance_m: float,
    inside: bool,
    overlaps: bool,
) -> None:
    row = _stamp([fence], [east_north], accuracy_m).row(0, named=True)
    assert row["distance_to_edge_m"] == pytest.approx(distance_m, abs=2e-3)
    assert (row["inside"], row["overlaps"]) == (inside, overlaps)


def test_fix_in_two_overlapping_fences_gets_two_rows() -> None:
    other = {
        **CIRCLE,
        "fence_id": "c5b",
        "lat": offset(LAT0, LON0, 4.0, 0.0)[0],
        "lon": offset(LAT0, LON0, 4.0, 0.0)[1],
    }
    out = _stamp([CIRCLE, other], [(2.0, 0.0)])
    assert out.sort("fence_id")["fence_id"].to_list() == ["c5", "c5b"]
    assert out["inside"].all()


def test_far_fixes_are_reported_only_when_their_segment_crosses() -> None:
    out = _stamp([CIRCLE], [(500.0, 0.0), (500.0, 10.0), (0.0, 1.0), (0.0, 800.0)])
    assert out.select("fix_row", "overlaps", "segment_crosses").rows() == [
        (2, True, True),  # arrived: the segment ends inside
        (3, False, True),  # left: the segment starts inside
    ]


def test_unsorted_input_keeps_fix_row_of_the_input() -> None:
    fx = make_fixes([(0.0, 0.0), (900.0, 0.0)], step_s=10).reverse()
    out = stamp_membership(fx, FenceSet.from_frame(make_fences([CIRCLE])), accuracy_k=1.0)
    assert out.filter("inside")["fix_row"].to_list() == [1]


def test_grid_and_brute_force_agree_on_random_fixes() -> None:
    rng = np.random.default_rng(11)
    centres = [offset(LAT0, LON0, e, n) for e, n in rng.uniform(-2000, 2000, (60, 2))]
    fences = make_fences(
        [
            {"fence_id": f"f{i}", "lat": la, "lon": lo, "radius_m": 30.0}
            for i, (la, lo) in enumerate(centres)
        ]
    )
    fx = make_fixes(
        [tuple(p) for p in rng.uniform(-2100, 2100, (20_000, 2))],
        step_s=1,
        accuracy_m=list(rng.choice([2.0, 10.0, 400.0], 20_000)),
    )
    out = stamp_membership(fx, FenceSet.from_frame(fences), accuracy_k=1.0, near_m=0.0)
    lat, lon = fx["lat"].to_numpy(), fx["lon"].to_numpy()
    from geofence.distance import local_distance_m

    c_lat = np.array([c[0] for c in centres])
    c_lon = np.array([c[1] for c in centres])
    d = local_distance_m(lat[:, None], lon[:, None], c_lat[None, :], c_lon[None, :]) - 30.0
    acc = fx["accuracy_m"].to_numpy()[:, None]
    fix_i, fence_i = np.nonzero(d <= acc)
    expected = {(int(a), f"f{b}") for a, b in zip(fix_i, fence_i, strict=True)}
    got = set(out.filter("overlaps").select("fix_row", "fence_id").iter_rows())
    assert got == expected


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"fence_id": "a", "kind": "circle", "lat": 95.0, "lon": 0.0, "radius_m": 5.0}, "lat=95"),
        ({"fence_id": "a", "kind": "circle", "lat": 1.0, "lon": 0.0, "radius_m": 0.0}, "radius_m"),
        ({"fence_id": "a", "kind": "square", "lat": 1.0, "lon": 0.0}, "kind='square'"),
        ({"fence_id": "a", "kind": "polygon", "wkt": "POINT (1 2)"}, "Point"),
        ({"fence_id": "a", "kind": "polygon", "wkt": "POLYGON ((0 0"}, "does not parse"),
        (
            {"fence_id": "a", "kind": "polygon", "wkt": "POLYGON ((0 0, 1 1, 1 0, 0 1, 0 0))"},
            "invalid",
        ),
    ],
)
def test_bad_fences_raise_value_errors_naming_the_row(row: dict[str, object], message: str) -> None:
    with pytest.raises(FenceGeometryError, match=message) as err:
        FenceSet.from_frame(make_fences([row]))
    assert isinstance(err.value, ValueError)
    assert "fences row 0 (fence_id='a')" in str(err.value)


def test_missing_fix_column_names_it() -> None:
    fx = make_fixes([(0.0, 0.0)]).drop("accuracy_m")
    with pytest.raises(FrameContractError, match="accuracy_m"):
        stamp_membership(fx, FenceSet.from_frame(make_fences([CIRCLE])), accuracy_k=1.0)


def _events(
    east_north: list[tuple[float, float]],
    accuracy_m: float = 1.0,
    *,
    confirm_fixes: int = 2,
    dwell_s: float = 600.0,
    step_s: float = 10.0,
    fences: list[dict[str, object]] | None = None,
) -> list[tuple[str, str, str]]:
    fx = make_fixes(east_north, accuracy_m=accuracy_m, step_s=step_s)
    fs = FenceSet.from_frame(make_fences(fences or [CIRCLE]))
    stamped = stamp_membership(fx, fs, accuracy_k=1.0)
    ev = fence_transitions(
        stamped,
        confirm_fixes=confirm_fixes,
        confirm_dwell=timedelta(seconds=dwell_s),
        exit_margin_k=3.0,
    )
    return [(r["fence_id"], r["event"], r["via"]) for r in ev.iter_rows(named=True)]


OUT, IN, EDGE_BAND = (0.0, 100.0), (0.0, 0.0), (0.0, 6.5)  # EDGE_BAND: 1.5 m out, acc 1 m


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ([OUT, IN, IN, OUT], [("c5", "ENTER", "fix"), ("c5", "EXIT", "fix")]),
        ([OUT, IN, OUT, IN, OUT], []),  # one fix at a time never confirms
        # flapping: in, just outside (within the exit margin), in, ...: one ENTER, no EXIT
        ([IN, IN, EDGE_BAND, IN, EDGE_BAND, IN, EDGE_BAND], [("c5", "ENTER", "fix")]),
        ([IN, IN, EDGE_BAND, (0.0, 9.0)], [("c5", "ENTER", "fix"), ("c5", "EXIT", "fix")]),
        # sparse fixes: the segment passes through the fence, neither endpoint is near it
        ([(-300.0, 0.0), (300.0, 0.0)], [("c5", "ENTER", "segment"), ("c5", "EXIT", "fix")]),
        # exit to a fix so far away it is not stamped at all
        ([IN, IN, EDGE_BAND, (0.0, 2000.0)], [("c5", "ENTER", "fix"), ("c5", "EXIT", "gap")]),
    ],
)
def test_transitions_table(
    path: list[tuple[float, float]], expected: list[tuple[str, ...]]
) -> None:
    assert _events(path) == expected


def test_dwell_confirms_a_single_run_by_time() -> None:
    assert _events([IN, IN, OUT], confirm_fixes=10, dwell_s=5.0)[0] == ("c5", "ENTER", "fix")
    assert _events([IN, IN, OUT], confirm_fixes=10, dwell_s=60.0) == []


def test_enter_reports_the_run_start_as_since_ts() -> None:
    fx = make_fixes([OUT, IN, IN, IN], accuracy_m=1.0, step_s=10)
    stamped = stamp_membership(fx, FenceSet.from_frame(make_fences([CIRCLE])), accuracy_k=1.0)
    ev = fence_transitions(
        stamped, confirm_fixes=3, confirm_dwell=timedelta(hours=1), exit_margin_k=2.0
    ).row(0, named=True)
    assert ev["since_ts"] == fx["ts"][1]
    assert ev["ts"] == fx["ts"][3]


def test_output_is_sorted_by_seq_then_fence_id_whatever_the_fence_order() -> None:
    fences = [
        {**CIRCLE, "fence_id": "z"},
        {**CIRCLE, "fence_id": "a", "radius_m": 8.0},
        {**SQUARE_WITH_HOLE, "fence_id": "m"},
    ]
    out = _stamp(fences, [(0.0, 0.0), (5.0, 0.0), (14.0, 0.0)], accuracy_m=1.0)
    assert out.rows() == out.sort("seq", "fence_id").rows()
    assert out.filter(pl.col("seq") == 1)["fence_id"].to_list() == ["a", "m", "z"]


def test_far_reaching_and_nan_fixes_take_the_slow_path_safely() -> None:
    fx = make_fixes([(0.0, 0.0), (3000.0, 0.0), (0.0, 2.0)], accuracy_m=[1.0, 5000.0, 1.0])
    fx = pl.concat([fx, make_fixes([(0.0, 0.0)], technician_id="tech-2")]).with_columns(
        pl.when(pl.col("technician_id") == "tech-2")
        .then(float("nan"))
        .otherwise("lat")
        .alias("lat")
    )
    out = stamp_membership(fx, FenceSet.from_frame(make_fences([CIRCLE])), accuracy_k=1.0)
    assert out["fix_row"].to_list() == [0, 1, 2]  # the 5 km accuracy circle reaches the fence
    # fix 1's segment starts inside the fence, fix 2's ends inside it
    assert out["segment_crosses"].to_list() == [False, True, True]
