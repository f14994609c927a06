"""Getis-Ord Gi* on H3 rings, against hand-built grids and esda."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import h3
import numpy as np
import polars as pl
import polars_h3 as plh3
import pytest

from geofence.errors import GeofenceError
from geofence.hotspots import (
    HotspotInputError,
    gi_star,
    hot_cells,
    pad_with_neighbours,
    star_weights,
)

ORIGIN = h3.latlng_to_cell(40.75, -73.95, 8)


def make_cell_counts(counts: dict[str, float], *, background: Sequence[str] = ()) -> pl.DataFrame:
    """Cell counts (str cells), with ``background`` cells at count 0."""
    cells = list(counts) + [c for c in background if c not in counts]
    return pl.DataFrame(
        {"cell": cells, "count": [counts.get(c, 0.0) for c in cells]},
        schema={"cell": pl.String, "count": pl.Float64},
    )


def test_planted_hot_spot_has_the_highest_z_and_is_significant() -> None:
    disk = h3.grid_disk(ORIGIN, 6)
    rng = np.random.default_rng(0)
    counts = {c: float(rng.poisson(1.0)) for c in disk}
    counts.update(dict.fromkeys(h3.grid_disk(ORIGIN, 1), 9.0))
    gi = gi_star(make_cell_counts(counts), seed=1, permutations=499)
    top = gi.sort("z", descending=True)["cell"][0]
    assert top == h3.str_to_int(ORIGIN)
    assert h3.str_to_int(ORIGIN) in hot_cells(gi, p_max=0.01).to_list()
    assert h3.str_to_int(ORIGIN) in hot_cells(gi, p_max=0.01, p_column="p_sim").to_list()


def test_weights_are_binary_star_over_the_frame_only() -> None:
    cells = pl.Series([h3.str_to_int(c) for c in sorted(h3.grid_disk(ORIGIN, 1))], dtype=pl.UInt64)
    weights = star_weights(cells).toarray()
    assert np.all(np.diag(weights) == 1)
    centre = cells.to_list().index(h3.str_to_int(ORIGIN))
    assert weights[centre].sum() == 7  # self + 6 neighbours
    assert np.all(weights.sum(axis=1) >= 3)  # ring cells: self + centre + 2 ring neighbours
    assert np.array_equal(weights, weights.T)


def test_pad_with_neighbours_adds_zero_cells() -> None:
    padded = pad_with_neighbours(make_cell_counts({ORIGIN: 3.0}))
    assert padded.height == 7
    assert padded["count"].sum() == 3.0
    assert padded.schema["cell"] == pl.UInt64


def test_without_permutations_p_sim_is_null() -> None:
    gi = gi_star(
        make_cell_counts({ORIGIN: 5.0}, background=h3.grid_disk(ORIGIN, 3)), permutations=0
    )
    assert gi["p_sim"].null_count() == gi.height
    assert gi["p_norm"].null_count() == 0


def test_same_seed_same_result_and_greater_alternative() -> None:
    counts = make_cell_counts({ORIGIN: 5.0}, background=h3.grid_disk(ORIGIN, 3))
    assert gi_star(counts, seed=3).equals(gi_star(counts, seed=3))
    greater = gi_star(counts, seed=3, alternative="greater")
    directed = gi_star(counts, seed=3)
    # the directed (folded) count is min(larger, P - larger) <= larger
    assert (greater["p_sim"] >= directed["p_sim"]).all()
    assert greater["p_sim"].max() <= 1.0


@pytest.mark.parametrize(
    ("frame", "kwargs", "fragment"),
    [
        (pl.DataFrame({"cell": [ORIGIN]}), {}, "missing column(s) ['count']"),
        (make_cell_counts({ORIGIN: 1.0}), {}, "needs >= 2 cells"),
        (make_cell_counts({}, background=h3.grid_disk(ORIGIN, 1)), {}, "positive total"),
        (pl.DataFrame({"cell": [ORIGIN, ORIGIN], "count": [1.0, 2.0]}), {}, "not unique"),
        (make_cell_counts({ORIGIN: 1.0}), {"k_ring": 0}, "k_ring=0"),
        (make_cell_counts({ORIGIN: 1.0}), {"permutations": -1}, "permutations=-1"),
    ],
)
def test_gi_star_rejects(frame: pl.DataFrame, kwargs: dict[str, int], fragment: str) -> None:
    with pytest.raises(HotspotInputError) as info:
        gi_star(frame, **kwargs)  # type: ignore[arg-type]
    assert fragment in str(info.value)
    assert isinstance(info.value, GeofenceError)
    assert isinstance(info.value, ValueError)


def nyc311_cell_counts(realdata: Path, resolution: int) -> pl.DataFrame:
    raw = pl.read_csv(realdata / "nyc311_sample" / "nyc311_1000.csv", infer_schema_length=0)
    points = raw.select(
        lat=pl.col("Latitude").cast(pl.Float64), lon=pl.col("Longitude").cast(pl.Float64)
    ).drop_nulls()
    counts = (
        points.select(cell=plh3.latlng_to_cell("lat", "lon", resolution))
        .group_by("cell")
        .agg(count=pl.len())
    )
    return pad_with_neighbours(counts)


def esda_g_local(counts: pl.DataFrame, *, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """esda G_Local(star=True, binary) on the same H3 1-ring adjacency: (z, p_norm, p_sim)."""
    from esda import G_Local
    from libpysal.weights import W

    adjacency = star_weights(counts["cell"]).tocoo()
    neighbours: dict[int, list[int]] = {i: [] for i in range(counts.height)}
    for i, j in zip(adjacency.row.tolist(), adjacency.col.tolist(), strict=True):
        if i != j:
            neighbours[i].append(j)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = G_Local(
            counts["count"].to_numpy(),
            W(neighbours),
            transform="B",
            star=True,
            permutations=999,
            seed=seed,
            n_jobs=1,
        )
    # esda keeps p_sim in float32: snap back to the exact (larger + 1) / 1000 grid
    p_sim = np.round(np.asarray(g.p_sim, dtype=np.float64) * 1000) / 1000
    return np.asarray(g.Zs), np.asarray(g.p_norm), p_sim


def esda_draws(n: int, max_neighbours: int, seed: int) -> np.ndarray:
    """The permutation ids esda's crand draws for ``seed`` (esda.crand.vec_permutations)."""
    np.random.seed(seed)
    return np.array(
        [np.random.choice(n - 1, size=max_neighbours, replace=False) for _ in range(999)]
    )


def overlap(a: set[int], b: set[int]) -> float:
    return len(a & b) / max(len(a | b), 1)


@pytest.mark.slow
@pytest.mark.realdata
def test_nyc311_hot_cells_overlap_esda(realdata: Path) -> None:
    counts = nyc311_cell_counts(realdata, 8)
    ez, ep_norm, ep_sim = esda_g_local(counts, seed=7)
    cells = counts["cell"].to_numpy()
    esda_hot_norm = set(cells[(ez > 0) & (ep_norm < 0.01)].tolist())
    esda_hot_sim = set(cells[(ez > 0) & (ep_sim < 0.01)].tolist())

    ours = gi_star(counts, seed=7)
    assert np.allclose(ours["z"].to_numpy(), ez)
    assert overlap(set(hot_cells(ours, p_max=0.01).to_list()), esda_hot_norm) >= 0.9
    assert len(esda_hot_norm) > 10

    # same permutation draws as esda -> the same pseudo p-values
    replayed = gi_star(
        counts, draws=esda_draws(counts.height, int(ours["n_neighbours"].max()), seed=7)
    )
    assert np.allclose(replayed["p_sim"].to_numpy(), ep_sim)
    assert (
        overlap(set(hot_cells(replayed, p_max=0.01, p_column="p_sim").to_list()), esda_hot_sim)
        >= 0.9
    )

    # own draws: the hot set is as stable as esda's own from seed to seed; nearly every one
    # of our hot cells is at least borderline (p_sim < 0.05) in esda
    own_hot = set(hot_cells(ours, p_max=0.01, p_column="p_sim").to_list())
    esda_borderline = set(cells[(ez > 0) & (ep_sim < 0.05)].tolist())
    assert len(own_hot & esda_borderline) / len(own_hot) >= 0.9
