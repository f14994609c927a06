"""The reliability panel's pure parts: bin pooling (a table) and the figure."""

from __future__ import annotations

import polars as pl
import pytest

from dashboard.figures.analytics import reliability_figure
from pipelines.views.analytics import pool_bins


def _raw(rows: list[tuple[int, int, float, int]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=["bin", "n", "p_sum", "hits"], orient="row")


POOLING = {
    "dense_deciles_stay": (
        [(0, 30, 0.6, 0), (5, 40, 22.0, 21), (9, 50, 47.5, 48)],
        [(0.0, 0.1, 30), (0.5, 0.6, 40), (0.9, 1.0, 50)],
    ),
    "sparse_ends_pool_toward_the_middle": (
        [(0, 5, 0.1, 0), (1, 10, 1.5, 1), (2, 10, 2.5, 0), (8, 12, 10.0, 10), (9, 30, 29.0, 30)],
        [(0.0, 0.3, 25), (0.8, 1.0, 42)],
    ),
    "a_lone_sparse_bin_stands_alone": (
        [(0, 8, 0.0, 0), (9, 257, 255.0, 257)],
        [(0.0, 0.1, 8), (0.9, 1.0, 257)],
    ),
    "empty": ([], []),
}


@pytest.mark.parametrize(("raw", "want"), POOLING.values(), ids=POOLING)
def test_pool_bins(raw: list[tuple[int, int, float, int]], want: list[tuple[float, ...]]) -> None:
    pooled = pool_bins(_raw(raw), bins=10, min_per_bin=20)
    got = [
        (round(lo, 6), round(hi, 6), n) for lo, hi, n in pooled.select("p_lo", "p_hi", "n").rows()
    ]
    assert got == want
    if raw:
        assert pooled["n"].sum() == sum(r[1] for r in raw)
        total_hits = sum(r[3] for r in raw)
        assert (pooled["observed"] * pooled["n"]).sum() == pytest.approx(total_hits)


def test_reliability_figure_draws_one_line_per_outcome_and_the_diagonal() -> None:
    bins = pl.DataFrame(
        {
            "outcome": ["P(within 5 m)", "P(within 5 m)", "P(on site)"],
            "p_lo": [0.0, 0.9, 0.9],
            "p_hi": [0.1, 1.0, 1.0],
            "n": [8, 257, 265],
            "predicted": [0.0, 0.995, 0.9999],
            "observed": [0.0, 1.0, 1.0],
        }
    )
    fig = reliability_figure(bins)
    lines = [t for t in fig.data if t.meta == "reliability"]
    assert [t.name for t in lines] == ["P(within 5 m)", "P(on site)"]
    assert list(lines[0].x) == [0.0, 0.995]
    assert list(lines[0].y) == [0.0, 1.0]
    assert "n=257" in lines[0].text[1]
    assert any(t.name == "perfect calibration" for t in fig.data)


def test_reliability_figure_says_when_nothing_is_labelled() -> None:
    empty = pl.DataFrame(schema={"outcome": pl.String, "n": pl.Int64})
    fig = reliability_figure(empty)
    assert "no labelled arrivals" in fig.layout.annotations[0].text
