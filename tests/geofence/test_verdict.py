"""Arrival verdicts: one table row per branch of the rule, plus evidence columns."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from geofence.errors import FrameContractError, ThresholdError
from geofence.verdict import TIERS, ArrivalThresholds, read_verdict, verify_arrivals
from tests.geofence.builders import T0, make_arrivals, make_fixes, make_stops, make_uwb


@dataclass
class Case:
    path: list[tuple[float, float]]  # fixes every 20 s from T0; the arrival is at T0 + 40 s
    accuracy_m: float | list[float | None] = 3.0
    stops: list[dict[str, object]] = field(default_factory=list)
    uwb: list[dict[str, object]] = field(default_factory=list)
    site_id: str | None = None
    mock: list[bool] | None = None
    now: datetime | None = None
    start_s: float = 0.0


NEAR = [(1.0, 0.0)] * 3
PRIOR = (0.9508, 0.9700)  # no evidence: the default prior's P(within 5 m), P(on site)
# case: (verdict, reason, decided_by, P(within 5 m), P(on site)); probabilities ±0.005
CASES = {
    "fix_within_radius": (
        Case([(1.0, 0.0), (1.0, 0.5), (1.0, 0.0)]),
        "AT_DOOR",
        None,
        "gps_fix",
        1.0,
        1.0,
    ),
    "stop_centroid_close": (
        Case(
            [(3.0, 0.0), (3.5, 0.0), (3.0, 0.5)],
            accuracy_m=10.0,
            stops=[{"east_m": 1.0, "se_m": 0.5}],
        ),
        "AT_DOOR",
        None,
        "stop",
        0.9997,
        1.0,
    ),
    "uwb_indoors_wins": (
        Case([(200.0, 0.0)] * 3, site_id="S1", uwb=[{"at_s": 45, "east_m": 1.0}]),
        "AT_DOOR",
        None,
        "uwb",
        1.0,
        1.0,
    ),
    "uwb_on_site_not_at_door": (
        Case(NEAR, site_id="S1", uwb=[{"at_s": 45, "east_m": 10.0}]),
        "ON_SITE",
        None,
        "uwb",
        0.0,
        1.0,
    ),
    "uwb_straddles_5m_on_site": (
        Case(NEAR, site_id="S1", uwb=[{"at_s": 45, "east_m": 4.9}]),
        "ON_SITE",
        None,
        "uwb",
        0.7721,
        1.0,
    ),
    "uwb_far": (
        Case(NEAR, site_id="S1", uwb=[{"at_s": 45, "east_m": 60.0}]),
        "REJECTED",
        None,
        "uwb",
        0.0,
        0.0,
    ),
    "uwb_too_inaccurate_is_ignored": (
        Case(NEAR, site_id="S1", uwb=[{"at_s": 45, "east_m": 30.0, "error_m": 2.0}]),
        "AT_DOOR",
        None,
        "gps_fix",
        1.0,
        1.0,
    ),
    "fix_far": (Case([(300.0, 0.0)] * 3, accuracy_m=5.0), "REJECTED", None, "gps_fix", 0.0, 0.0),
    "fix_far_but_not_every_fix": (
        Case([(300.0, 0.0), (2.0, 0.0), (300.0, 0.0)], accuracy_m=5.0),
        "INCONCLUSIVE",
        "straddles_radius",
        None,
        0.0,
        0.0,
    ),
    "fix_50m_accuracy_may_be_misjudged": (
        Case([(50.0, 0.0)] * 3, accuracy_m=5.0),
        "INCONCLUSIVE",
        "straddles_radius",
        None,
        0.014,
        0.033,
    ),
    "fix_60m_poor_accuracy_straddles": (
        Case([(60.0, 0.0)] * 3, accuracy_m=10.0),
        "INCONCLUSIVE",
        "straddles_radius",
        None,
        0.5827,
        0.6676,
    ),
    "fix_straddles_5m_on_site": (Case([(4.0, 0.0)] * 3), "ON_SITE", None, "gps_fix", 0.9992, 1.0),
    "stop_15m_on_site": (
        Case([(15.0, 0.0)] * 3, accuracy_m=30.0, stops=[{"east_m": 15.0, "se_m": 0.5}]),
        "ON_SITE",
        None,
        "stop",
        0.1342,
        1.0,
    ),
    "stop_ended_before_the_tap_yields_to_the_fix": (
        Case([(4.0, 0.0)] * 3, accuracy_m=15.0, stops=[{"east_m": 100.0, "end_s": 0.0}]),
        "ON_SITE",
        None,
        "gps_fix",
        0.9952,
        1.0,
    ),
    "far_stop_vetoed_by_a_fix_at_the_door": (
        Case([(4.0, 0.0)] * 3, accuracy_m=15.0, stops=[{"east_m": 100.0}]),
        "INCONCLUSIVE",
        "straddles_radius",
        None,
        0.0,
        0.0,
    ),
    "stop_far_without_good_fix": (
        Case([(45.0, 0.0)] * 3, accuracy_m=40.0, stops=[{"east_m": 50.0, "se_m": 1.0}]),
        "REJECTED",
        None,
        "stop",
        0.0,
        0.0,
    ),
    "poor_accuracy": (
        Case([(1.0, 0.0)] * 3, accuracy_m=40.0),
        "INCONCLUSIVE",
        "poor_accuracy",
        None,
        0.9865,
        1.0,
    ),
    "null_accuracy_is_poor": (
        Case(NEAR, accuracy_m=[None, None, None]),
        "INCONCLUSIVE",
        "poor_accuracy",
        None,
        *PRIOR,
    ),
    "no_fix_within_window": (
        Case(NEAR, start_s=600.0),
        "INCONCLUSIVE",
        "no_fix_within_window",
        None,
        *PRIOR,
    ),
    "gps_blind_no_uwb": (
        Case(NEAR, start_s=600.0, site_id="S9"),
        "INCONCLUSIVE",
        "gps_blind_no_uwb",
        None,
        *PRIOR,
    ),
    "spoof_speed": (
        Case([(0.0, 20_000.0), (1.0, 0.0), (1.0, 0.5)]),
        "INCONCLUSIVE",
        "spoof_speed",
        None,
        1.0,
        1.0,
    ),
    "spoof_repeated_coords": (
        Case([(1.0, 0.0)] * 6),
        "INCONCLUSIVE",
        "spoof_repeated_coords",
        None,
        1.0,
        1.0,
    ),
    "mock_location": (
        Case([(1.0, 0.0), (1.0, 0.5), (1.0, 0.0)], mock=[False, False, True]),
        "INCONCLUSIVE",
        "mock_location",
        None,
        1.0,
        1.0,
    ),
    "future_fix": (
        Case([(1.0, 0.0), (1.0, 0.5), (1.0, 0.0)], now=T0 + timedelta(seconds=30)),
        "INCONCLUSIVE",
        "future_fix",
        None,
        1.0,
        1.0,
    ),
}


def _run(case: Case, th: ArrivalThresholds = ArrivalThresholds()) -> dict[str, object]:
    fx = make_fixes(
        case.path,
        step_s=20,
        accuracy_m=case.accuracy_m,
        mock_location=case.mock,
        start=T0 + timedelta(seconds=case.start_s),
    )
    arrivals = make_arrivals([{"at_s": 40, "site_id": case.site_id}])
    uwb = make_uwb(case.uwb) if case.uwb else None
    out = verify_arrivals(arrivals, fx, make_stops(case.stops), uwb, th, now=case.now)
    assert out.height == 1
    return out.row(0, named=True)


@pytest.mark.parametrize(
    ("case", "verdict", "reason", "decided_by", "p_within", "p_site"), CASES.values(), ids=CASES
)
def test_verdict_table(
    case: Case,
    verdict: str,
    reason: str | None,
    decided_by: str | None,
    p_within: float,
    p_site: float,
) -> None:
    row = _run(case)
    assert (row["verdict"], row["reason"], row["decided_by"]) == (verdict, reason, decided_by)
    assert row["verdict"] in TIERS
    assert row["p_within_radius"] == pytest.approx(p_within, abs=0.005)
    assert row["p_on_site"] == pytest.approx(p_site, abs=0.005)
    assert row["p_within_radius"] <= row["p_on_site"]


def test_evidence_columns() -> None:
    row = _run(CASES["fix_within_radius"][0])
    assert row["fix_before_ts"] == T0 + timedelta(seconds=40)
    assert row["fix_after_ts"] == T0 + timedelta(seconds=40)
    assert row["distance_m"] == pytest.approx(1.0, abs=1e-3)
    assert row["accuracy_m"] == 3.0
    assert row["n_fixes_in_window"] == 3
    assert row["physical_arrival_ts"] == T0  # first fix within the radius
    assert row["status_lag_s"] == 40.0
    assert json.loads(str(row["thresholds"]))["radius_m"] == 5.0
    assert row["rule_version"] == "arrival-v2"
    stated = json.loads(str(row["thresholds"]))
    assert (stated["site_radius_m"], stated["on_site_min_p"], stated["reject_max_p"]) == (
        25.0,
        0.95,
        0.01,
    )
    assert stated["model"]["bias_max_m"] == 8.0
    assert stated["model"]["prior_away"] == pytest.approx(0.03)
    assert row["model_evidence"] == "gps_fix"


def test_stop_evidence_and_physical_arrival_from_stop_start() -> None:
    row = _run(CASES["stop_centroid_close"][0])
    assert row["stop_n_fixes"] == 10
    assert row["stop_se_m"] == 0.5
    assert row["stop_distance_m"] == pytest.approx(1.0, abs=1e-3)
    assert row["physical_arrival_ts"] == T0 - timedelta(seconds=300)
    assert row["status_lag_s"] == 340.0


def test_stops_with_too_few_fixes_or_out_of_time_are_ignored() -> None:
    few = Case([(3.0, 0.0)] * 3, accuracy_m=10.0, stops=[{"east_m": 1.0, "n_fixes": 2}])
    late = Case([(3.0, 0.0)] * 3, accuracy_m=10.0, stops=[{"start_s": 400, "end_s": 900}])
    for case in (few, late):
        row = _run(case)
        assert (row["verdict"], row["stop_n_fixes"]) == ("ON_SITE", None)  # on the fixes


def test_many_arrivals_keep_one_row_each() -> None:
    fx = pl.concat([make_fixes(NEAR[:2], technician_id=t, step_s=20) for t in ("a", "b", "c")])
    arrivals = make_arrivals(
        [
            {"technician_id": t, "at_s": s, "event_id": f"{t}{s}"}
            for t in ("a", "b", "d")
            for s in (0, 20, 900)
        ]
    )
    out = verify_arrivals(arrivals, fx, make_stops(), None)
    assert sorted(out["event_id"]) == sorted(arrivals["event_id"])
    counts = out.group_by("verdict").len().sort("verdict").rows()
    assert counts == [("AT_DOOR", 4), ("INCONCLUSIVE", 5)]


def test_thresholds_are_checked_and_stated() -> None:
    with pytest.raises(ThresholdError, match="radius_m"):
        ArrivalThresholds(radius_m=0.0)
    with pytest.raises(ThresholdError, match="max_fix_gap"):
        ArrivalThresholds(max_fix_gap=timedelta(seconds=-1))
    strict = ArrivalThresholds(radius_m=1.0, rule_version="arrival-test")
    row = _run(CASES["fix_within_radius"][0], strict)
    assert (row["verdict"], row["rule_version"]) == ("ON_SITE", "arrival-test")
    with pytest.raises(ThresholdError, match="site_radius_m"):
        ArrivalThresholds(site_radius_m=4.0)
    with pytest.raises(ThresholdError, match="reject_max_p"):
        ArrivalThresholds(reject_max_p=0.5, on_site_min_p=0.4)


def test_legacy_verdicts_are_read_as_tiers() -> None:
    stored = pl.DataFrame({"verdict": ["VERIFIED", "REJECTED", "INCONCLUSIVE", "ON_SITE"]})
    read = stored.select(read_verdict(pl.col("verdict")))["verdict"].to_list()
    assert read == ["AT_DOOR", "REJECTED", "INCONCLUSIVE", "ON_SITE"]
    assert set(read) <= set(TIERS)


def test_missing_arrival_column_is_named() -> None:
    arrivals = make_arrivals([{}]).drop("customer_lon")
    with pytest.raises(FrameContractError, match="customer_lon"):
        verify_arrivals(arrivals, make_fixes(NEAR), make_stops(), None)


def test_verdicts_do_not_depend_on_fix_row_order() -> None:
    """Sorted, reversed or shuffled fixes: same verdicts (the latest fix is not the last row)."""
    late = T0 + timedelta(hours=2)
    tie = T0 + timedelta(seconds=20)
    fx = pl.concat(
        [
            make_fixes(NEAR, technician_id="a", step_s=20, start=late),
            make_fixes(NEAR[:1], technician_id="a", start=late + timedelta(hours=6)),  # latest
            make_fixes([(1.0, 0.0), (1.0, 0.5), (1.0, 0.0)], technician_id="b", step_s=20),
            # a repeated fix at b's 20 s: tied timestamps (a tie between different fixes
            # would be resolved by row order, which this test does not pin down)
            make_fixes([(1.0, 0.5)], technician_id="b", start=tie),
            make_fixes([(50.0, 0.0)] * 3, technician_id="c", step_s=20, accuracy_m=5.0),
        ]
    ).sort("technician_id", "ts", maintain_order=True)
    arrivals = make_arrivals(
        [
            {"technician_id": "a", "at_s": 7240, "event_id": "a"},
            {"technician_id": "b", "at_s": 20, "event_id": "b20"},
            {"technician_id": "b", "at_s": 40, "event_id": "b40"},
            {"technician_id": "c", "at_s": 40, "event_id": "c"},
        ]
    )
    cols = ["event_id", "verdict", "reason", "decided_by", "fix_ts", "distance_m"]
    cols += ["accuracy_m", "n_fixes_in_window", "physical_arrival_ts"]

    def verdicts(frame: pl.DataFrame) -> pl.DataFrame:
        return verify_arrivals(arrivals, frame, make_stops(), None).select(cols).sort("event_id")

    expected = verdicts(fx)
    assert expected["verdict"].to_list() == ["AT_DOOR", "AT_DOOR", "AT_DOOR", "INCONCLUSIVE"]
    assert fx["ts"].max() != fx["ts"][-1]  # the latest fix is a's, not the last row
    orders = [
        fx.reverse(),
        fx.sample(fraction=1.0, shuffle=True, seed=3),
        fx.sort("technician_id", "ts", descending=[True, True], maintain_order=True),
        fx.sort("technician_id", "ts", descending=[False, True], maintain_order=True),
    ]
    for order in orders:
        assert order["ts"][-1] != fx["ts"].max()
        assert_frame_equal(verdicts(order), expected)
