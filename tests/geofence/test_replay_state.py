"""Replay state: latest sample at or before T per stream and key, staleness, trail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import polars as pl
import pytest

from geofence.errors import GeofenceError
from geofence.replay_state import ReplayStateError, state_at, states_at

T0 = datetime(2024, 3, 1, 9, 0)
Row = tuple[float, str, float]  # (minutes after T0, technician_id, value)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def make_gps(rows: list[Row], *, time_unit: str = "us", tz: str | None = None) -> pl.DataFrame:
    """A GPS-like stream in the given row order (not sorted on purpose)."""
    frame = pl.DataFrame(
        {
            "ts": [at(m) for m, _, _ in rows],
            "technician_id": [tech for _, tech, _ in rows],
            "value": [v for _, _, v in rows],
        },
        schema={"ts": pl.Datetime(time_unit), "technician_id": pl.String, "value": pl.Float64},  # type: ignore[arg-type]
    )
    return frame if tz is None else frame.with_columns(pl.col("ts").dt.replace_time_zone(tz))


def latest_rows(frame: pl.DataFrame) -> list[tuple[str, float, float, bool]]:
    """(technician_id, value, staleness_s, stale) per latest row."""
    return list(frame.select("technician_id", "value", "staleness_s", "stale").iter_rows())


# (case, rows, t in minutes, key columns, staleness limit in s, expected latest rows, status)
CASES = [
    (
        "gap: the last sample before the gap is shown, with its age",
        [(0, "a", 1.0), (1, "a", 2.0), (10, "a", 3.0)],
        5,
        True,
        None,
        [("a", 2.0, 240.0, False)],
        "ok",
    ),
    (
        "no sample yet",
        [(10, "a", 1.0)],
        5,
        True,
        None,
        [],
        "no_sample_yet",
    ),
    (
        "out-of-order input is sorted first",
        [(4, "a", 4.0), (1, "a", 1.0), (6, "a", 6.0), (3, "a", 3.0)],
        5,
        True,
        None,
        [("a", 4.0, 60.0, False)],
        "ok",
    ),
    (
        "several technicians: one latest row each, sorted by key",
        [(1, "b", 1.0), (2, "a", 2.0), (3, "b", 3.0), (7, "a", 7.0), (4, "c", 4.0)],
        5,
        True,
        None,
        [("a", 2.0, 180.0, False), ("b", 3.0, 120.0, False), ("c", 4.0, 60.0, False)],
        "ok",
    ),
    (
        "staleness flag: only above the limit",
        [(1, "a", 1.0), (4, "b", 4.0), (3, "c", 3.0)],
        5,
        True,
        120.0,
        [("a", 1.0, 240.0, True), ("b", 4.0, 60.0, False), ("c", 3.0, 120.0, False)],
        "partly_stale",
    ),
    (
        "every key stale",
        [(1, "a", 1.0), (2, "b", 2.0)],
        5,
        True,
        30.0,
        [("a", 1.0, 240.0, True), ("b", 2.0, 180.0, True)],
        "stale",
    ),
    (
        "exact-equal timestamp is included (at or before)",
        [(5, "a", 5.0), (5.001, "a", 9.0)],
        5,
        True,
        0.0,
        [("a", 5.0, 0.0, False)],
        "ok",
    ),
    (
        "equal timestamps of one key: the last in input order wins",
        [(3, "a", 1.0), (3, "a", 2.0), (3, "a", 3.0)],
        5,
        True,
        None,
        [("a", 3.0, 120.0, False)],
        "ok",
    ),
    (
        "no key columns: one latest row for the whole stream",
        [(1, "a", 1.0), (4, "b", 4.0), (6, "c", 6.0)],
        5,
        False,
        None,
        [("b", 4.0, 60.0, False)],
        "ok",
    ),
]


@pytest.mark.parametrize(
    ("rows", "t_min", "keyed", "limit_s", "expected", "status"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_state_at_table(
    rows: list[Row],
    t_min: float,
    keyed: bool,
    limit_s: float | None,
    expected: list[tuple[str, float, float, bool]],
    status: str,
) -> None:
    gps = make_gps(rows)
    state = state_at(
        {"gps": gps},
        at(t_min),
        max_staleness=None if limit_s is None else {"gps": timedelta(seconds=limit_s)},
        key_cols={"gps": ["technician_id"]} if keyed else None,
    )["gps"]
    assert state.stream == "gps"
    assert state.status == status
    assert latest_rows(state.latest) == expected
    assert state.latest.columns == [*gps.columns, "staleness_s", "stale"]
    assert state.trail.is_empty()
    assert state.trail.schema == gps.schema


@pytest.mark.parametrize(
    ("trail_min", "expected_values"),
    [
        (None, []),
        (0, [5.0]),  # [t, t]: only the sample exactly at t
        (2, [3.0, 3.5, 5.0]),  # both ends inclusive, time-sorted, all keys
        (60, [1.0, 3.0, 3.5, 5.0]),
    ],
)
def test_state_at_trail(trail_min: float | None, expected_values: list[float]) -> None:
    gps = make_gps([(5, "a", 5.0), (1, "a", 1.0), (6, "a", 6.0), (3.5, "b", 3.5), (3, "a", 3.0)])
    state = state_at(
        {"gps": gps},
        at(5),
        trail=None if trail_min is None else timedelta(minutes=trail_min),
        key_cols={"gps": ["technician_id"]},
    )["gps"]
    assert state.trail["value"].to_list() == expected_values


def test_state_at_several_streams_and_composite_keys() -> None:
    iot = pl.DataFrame(
        {
            "ts": [at(1), at(2), at(2), at(9)],
            "device_id": ["d1", "d1", "d1", "d1"],
            "metric": ["temp", "temp", "hum", "temp"],
            "value": [20.0, 21.0, 55.0, 30.0],
        }
    )
    gps = make_gps([(8, "a", 1.0)])
    states = state_at(
        {"iot": iot, "gps": gps},
        at(3),
        max_staleness={"iot": timedelta(minutes=5)},
        key_cols={"iot": ["device_id", "metric"], "gps": ["technician_id"]},
    )
    assert list(states) == ["iot", "gps"]
    assert states["iot"].latest.select("metric", "value").rows() == [("hum", 55.0), ("temp", 21.0)]
    assert states["gps"].status == "no_sample_yet"


@pytest.mark.parametrize(
    ("time_unit", "tz"), [("ms", None), ("us", "UTC"), ("ns", "Europe/London")]
)
def test_state_at_time_units_and_zones(time_unit: str, tz: str | None) -> None:
    gps = make_gps([(1, "a", 1.0), (3, "a", 3.0)], time_unit=time_unit, tz=tz)
    t = at(2.5) if tz is None else at(2.5).replace(tzinfo=UTC)
    latest = state_at({"gps": gps}, t)["gps"].latest
    assert latest["value"].to_list() == [1.0]  # London is on UTC on 1 March
    assert latest["staleness_s"][0] == pytest.approx(90.0)


def test_state_at_aware_time_in_another_zone() -> None:
    gps = make_gps([(0, "a", 1.0), (60, "a", 2.0)], tz="UTC")
    t = at(90).replace(tzinfo=timezone(timedelta(hours=2))) + timedelta(hours=2)  # = T0+90 min UTC
    latest = state_at({"gps": gps}, t)["gps"].latest
    assert latest["value"].to_list() == [2.0]
    assert latest["staleness_s"][0] == pytest.approx(1800.0)


@pytest.mark.parametrize("t_min", [-1, 0, 1, 2.5, 3, 4, 5, 7.5, 100])
def test_states_at_agrees_with_state_at(t_min: float) -> None:
    gps = make_gps(
        [(3, "b", 3.0), (0, "a", 0.0), (3, "b", 3.3), (5, "a", 5.0), (2, "c", 2.0), (7.5, "c", 7.5)]
    )
    options = {
        "max_staleness": {"gps": timedelta(minutes=2)},
        "key_cols": {"gps": ["technician_id"]},
    }
    grid = [at(m) for m in (-1, 0, 1, 2.5, 3, 4, 5, 7.5, 100)]
    table = states_at({"gps": gps}, grid[::-1], **options)["gps"]  # type: ignore[arg-type]
    one = state_at({"gps": gps}, at(t_min), **options)["gps"]  # type: ignore[arg-type]
    sliced = table.filter(pl.col("replay_ts") == at(t_min)).drop("replay_ts")
    assert sliced.equals(one.latest)


def test_states_at_layout_and_empty_grid() -> None:
    gps = make_gps([(1, "a", 1.0), (2, "b", 2.0)], time_unit="ms")
    table = states_at({"gps": gps}, [at(1), at(1), at(3)], key_cols={"gps": ["technician_id"]})[
        "gps"
    ]
    assert table.columns == ["replay_ts", "ts", "technician_id", "value", "staleness_s", "stale"]
    assert table.schema["replay_ts"] == pl.Datetime("ms")
    assert table.select("replay_ts", "technician_id").rows() == [
        (at(1), "a"),
        (at(3), "a"),
        (at(3), "b"),
    ]
    assert not table["stale"].any()
    empty = states_at({"gps": gps}, [])["gps"]
    assert empty.is_empty()
    assert empty.columns == table.columns


@pytest.mark.parametrize(
    ("streams", "kwargs", "message"),
    [
        ({"gps": pl.DataFrame({"t": [T0]})}, {}, r"stream 'gps': column\(s\) \['ts'\] missing"),
        (
            {"gps": pl.DataFrame({"ts": ["2024-03-01"]})},
            {},
            "column 'ts' is String, expected Datetime",
        ),
        (
            {"gps": make_gps([(0, "a", 1.0)])},
            {"key_cols": {"gps": ["device_id"]}},
            r"column\(s\) \['device_id'\] missing",
        ),
        (
            {"gps": make_gps([(0, "a", 1.0)])},
            {"key_cols": {"gsp": ["x"]}},
            r"key_cols names stream\(s\) \['gsp'\]",
        ),
        (
            {"gps": make_gps([(0, "a", 1.0)])},
            {"max_staleness": {"iot": timedelta(1)}},
            r"max_staleness names stream\(s\) \['iot'\]",
        ),
        ({"gps": make_gps([(0, "a", 1.0)], tz="UTC")}, {}, "is naive but the time column is"),
        (
            {"gps": pl.DataFrame({"ts": [T0, None]}, schema={"ts": pl.Datetime("us")})},
            {},
            "stream 'gps' row 1: ts=null",
        ),
    ],
)
def test_replay_input_errors(
    streams: dict[str, pl.DataFrame], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ReplayStateError, match=message) as info:
        state_at(streams, at(1), **kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, GeofenceError)
    assert isinstance(info.value, ValueError)
    with pytest.raises(ReplayStateError, match=message):
        states_at(streams, [at(1)], **kwargs)  # type: ignore[arg-type]


def test_state_at_negative_trail() -> None:
    with pytest.raises(ReplayStateError, match="is negative"):
        state_at({"gps": make_gps([])}, at(1), trail=timedelta(minutes=-1))


def test_inputs_are_not_mutated() -> None:
    gps = make_gps([(3, "a", 3.0), (1, "a", 1.0)])
    before = gps.clone()
    state_at({"gps": gps}, at(5), trail=timedelta(minutes=10))
    states_at({"gps": gps}, [at(5)])
    assert gps.equals(before)
