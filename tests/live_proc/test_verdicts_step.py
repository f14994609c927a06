"""The live verdict step in event time: decided once the window has passed, re-versioned by
late fixes, and equal to the batch runner on a generated world."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from pipelines.arrivals.runner import load_arrivals, thresholds_from
from pipelines.live.processors.verdicts import (
    FIX_SCHEMA,
    VerdictInputs,
    VerdictState,
    VerdictTiming,
    step,
)
from pipelines.settings import load_settings
from pipelines.store.gateway import Store

T0 = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
CUSTOMER = (30.2500, 120.1500)
WALL = datetime(2026, 10, 2, tzinfo=UTC)


def _fixes(
    tech: str, start: datetime, n: int, *, lat: float, lon: float, step_deg: float = 1e-7
) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "technician_id": [tech] * n,
            "ts": [start + timedelta(seconds=10 * i) for i in range(n)],
            "lat": [lat] * n,
            "lon": [lon + step_deg * i for i in range(n)],
            "accuracy_m": [4.0] * n,
            "speed_mps": [0.0] * n,
            "mock_location": [False] * n,
        },
        schema=FIX_SCHEMA,
    )


def _arrival(ts: datetime) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "ticket_id": "TK1",
                "event_id": "E1",
                "technician_id": "T1",
                "ts": ts,
                "customer_lat": CUSTOMER[0],
                "customer_lon": CUSTOMER[1],
                "site_id": None,
                "region": "north",
            }
        ]
    )


def _timing() -> tuple[Any, VerdictTiming]:
    th = thresholds_from(load_settings(timezone="UTC").thresholds)
    return th, VerdictTiming.of(th)


def test_a_false_arrival_is_rejected_once_its_window_has_passed_in_event_time() -> None:
    th, timing = _timing()
    far = (CUSTOMER[0] + 0.005, CUSTOMER[1])  # about 550 m north
    state = VerdictState()
    state, out = step(
        state,
        VerdictInputs(
            WALL, fixes=_fixes("T1", T0 - timedelta(minutes=5), 31, lat=far[0], lon=far[1])
        ),
        th,
        timing,
    )
    state, out = step(state, VerdictInputs(WALL, arrivals=_arrival(T0)), th, timing)
    assert out == []  # the technician's watermark is at the arrival: not yet decided
    state, out = step(
        state,
        VerdictInputs(
            WALL, fixes=_fixes("T1", T0 + timedelta(seconds=10), 12, lat=far[0], lon=far[1])
        ),
        th,
        timing,
    )
    assert [(v.row["verdict"], v.version, v.trigger) for v in out] == [("REJECTED", 1, "first")]
    assert out[0].data()["version"] == 1


def test_a_late_fix_re_evaluates_and_raises_the_version() -> None:
    th, timing = _timing()
    far = (CUSTOMER[0] + 0.005, CUSTOMER[1])
    state = VerdictState()
    # driving; fixes stop 5 min before the arrival and resume 3 min after: no evidence near it
    drive = 1e-4  # about 10 m per 10 s
    inputs = [
        VerdictInputs(
            WALL,
            fixes=_fixes(
                "T1", T0 - timedelta(minutes=15), 60, lat=far[0], lon=far[1], step_deg=drive
            ),
        ),
        VerdictInputs(WALL, arrivals=_arrival(T0)),
        VerdictInputs(
            WALL,
            fixes=_fixes(
                "T1", T0 + timedelta(minutes=3), 10, lat=far[0], lon=far[1], step_deg=drive
            ),
        ),
    ]
    outs = []
    for i in inputs:
        state, out = step(state, i, th, timing)
        outs.extend(out)
    assert [(v.row["verdict"], v.row["reason"], v.version) for v in outs] == [
        ("INCONCLUSIVE", "no_fix_within_window", 1)
    ]
    # a post 10 min late: the phone's fixes at the door, 20 s before "arrived"
    late = _fixes("T1", T0 - timedelta(seconds=20), 3, lat=CUSTOMER[0], lon=CUSTOMER[1])
    state, out = step(state, VerdictInputs(WALL, fixes=late), th, timing)
    assert [(v.row["verdict"], v.version, v.trigger) for v in out] == [("AT_DOOR", 2, "late")]
    # the same late post again adds nothing
    state, out = step(state, VerdictInputs(WALL, fixes=late), th, timing)
    assert out == []


def test_a_silent_phone_gets_its_verdict_after_the_bounded_wait() -> None:
    th, timing = _timing()
    state, out = step(VerdictState(), VerdictInputs(WALL, arrivals=_arrival(T0)), th, timing)
    assert out == []
    later = WALL + timing.max_wait
    state, out = step(state, VerdictInputs(later), th, timing)
    assert [(v.row["reason"], v.trigger) for v in out] == [("no_fix_within_window", "wait")]


def test_live_verdicts_equal_the_batch_runner_for_a_simulated_day(
    demo_world: tuple[Any, dict[str, object]],
) -> None:
    settings = demo_world[0]
    th = thresholds_from(settings.thresholds)
    timing = VerdictTiming.of(th)
    with Store(settings.store_path, read_only=True) as store:
        all_arrivals = load_arrivals(store)
        # the simulated day with the most arrivals, and the fixes around it
        day = (
            all_arrivals.group_by(pl.col("ts").dt.date().alias("d"))
            .len()
            .sort("len", "d")
            .row(-1)[0]
        )
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        end = start + timedelta(days=1)
        arrivals = all_arrivals.filter(pl.col("ts").is_between(start, end, closed="left"))
        batch = store.query(
            "SELECT event_id, verdict, reason, decided_by, distance_m FROM arrival_checks "
            "WHERE event_ts >= ? AND event_ts < ?",
            (start, end),
        )
        fixes = store.query(
            "SELECT technician_id, ts, lat, lon, accuracy_m, speed_mps, mock_location "
            "FROM gps_fixes WHERE ts >= ? AND ts < ? ORDER BY ts",
            (start - timedelta(hours=1), end + timedelta(hours=1)),
        )
        uwb = store.query(
            "SELECT tag_id AS technician_id, site_id, ts, lat, lon, "
            "coalesce(error_m, 0.1) AS error_m FROM uwb_positions WHERE ts >= ? AND ts < ?",
            (start - timedelta(hours=1), end + timedelta(hours=1)),
        )
    assert arrivals.height >= 10
    start, end = start - timedelta(hours=1), end + timedelta(hours=1)
    wall = datetime.now(UTC)  # as the batch run: no fix is in the future
    state = VerdictState()
    latest: dict[str, dict[str, Any]] = {}
    versions = 0
    chunk = timedelta(minutes=5)
    t = start
    state, _ = step(state, VerdictInputs(wall, uwb=uwb), th, timing)
    while t <= end + chunk:
        sel_f = fixes.filter((pl.col("ts") >= t) & (pl.col("ts") < t + chunk))
        sel_a = arrivals.filter((pl.col("ts") >= t) & (pl.col("ts") < t + chunk))
        state, out = step(state, VerdictInputs(wall, fixes=sel_f, arrivals=sel_a), th, timing)
        for v in out:
            latest[v.event_id] = v.row
            versions += 1
        t += chunk
    for _ in range(2):  # end of input: every window has passed
        state, out = step(state, VerdictInputs(wall, mark=end + timedelta(days=1)), th, timing)
        for v in out:
            latest[v.event_id] = v.row
    live = pl.DataFrame(
        [
            {k: r[k] for k in ("event_id", "verdict", "reason", "decided_by", "distance_m")}
            for r in latest.values()
        ],
        schema=batch.schema,
    ).sort("event_id")
    assert live.height == batch.height == arrivals.height
    assert live.to_dicts() == batch.sort("event_id").to_dicts()
    assert versions >= live.height
