"""The live geofence engine: enter, arrived_auto, dwell and exit of a visit, the same whether
the fixes come in one step or split across steps; GPS noise at the edge does not flap."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from pipelines.live.processors.fences import FenceInputs, FenceRules, FenceState, step
from pipelines.live.processors.verdicts import FIX_SCHEMA

T0 = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
DOOR = (30.2500, 120.1500)
M_LAT = 1 / 111_000  # degrees per metre north


def _visit() -> pl.DataFrame:
    """Driving in from 300 m south at 10 m/s, 8 min at the door, driving off north."""
    rows = []
    t = T0
    for i in range(30, 0, -1):  # 300 m .. 10 m south
        rows.append((t, DOOR[0] - i * 10 * M_LAT, 10.0, 5.0))
        t += timedelta(seconds=1)
    for _ in range(48):  # 8 min at the door, every 10 s
        rows.append((t, DOOR[0] + 1 * M_LAT, 0.0, 3.0))
        t += timedelta(seconds=10)
    for i in range(1, 31):
        rows.append((t, DOOR[0] + i * 10 * M_LAT, 10.0, 5.0))
        t += timedelta(seconds=1)
    return pl.DataFrame(
        [
            {"technician_id": "T1", "ts": ts, "lat": lat, "lon": DOOR[1], "accuracy_m": acc,
             "speed_mps": v, "mock_location": False}
            for ts, lat, v, acc in rows
        ],
        schema=FIX_SCHEMA,
    )  # fmt: skip


def _setup() -> FenceInputs:
    return FenceInputs(
        events=[{"ticket_id": "TK1", "event_type": "assigned", "actor": "disp", "note": "T1"}],
        points={"TK1": DOOR},
    )


def _run(chunks: list[pl.DataFrame]) -> list[tuple[str, datetime]]:
    rules = FenceRules()
    state, out = step(FenceState(), _setup(), rules)
    events = list(out)
    for c in chunks:
        state, out = step(state, FenceInputs(fixes=c), rules)
        events += out
    return [(e.kind, e.ts) for e in events]


def test_a_visit_gives_enter_arrived_auto_dwell_exit_whatever_the_steps() -> None:
    fixes = _visit()
    whole = _run([fixes])
    assert [k for k, _ in whole] == ["enter", "arrived_auto", "dwell", "exit"]
    split = _run([fixes[i : i + 7] for i in range(0, fixes.height, 7)])
    assert split == whole


def test_noise_at_the_edge_does_not_flap_and_closed_tickets_have_no_fence() -> None:
    rules = FenceRules()
    state, _ = step(FenceState(), _setup(), rules)
    # inside, then a few fixes just outside the edge but within 2 sigma: still inside
    near = [DOOR[0] + 20 * M_LAT] * 6 + [DOOR[0] + 36 * M_LAT] * 4 + [DOOR[0] + 20 * M_LAT] * 3
    fixes = pl.DataFrame(
        [
            {"technician_id": "T1", "ts": T0 + timedelta(seconds=10 * i), "lat": lat,
             "lon": DOOR[1], "accuracy_m": 8.0, "speed_mps": 1.0, "mock_location": False}
            for i, lat in enumerate(near)
        ],
        schema=FIX_SCHEMA,
    )  # fmt: skip
    state, out = step(state, FenceInputs(fixes=fixes), rules)
    assert [e.kind for e in out] == ["enter"]
    closed = [{"ticket_id": "TK1", "event_type": "closed", "actor": "disp"}]
    state, out = step(state, FenceInputs(events=closed), rules)
    far = fixes.with_columns(
        pl.col("ts") + timedelta(minutes=5), pl.lit(DOOR[0] + 500 * M_LAT).alias("lat")
    )
    state, out = step(state, FenceInputs(fixes=far), rules)
    assert out == []
    assert state.inside == {}
