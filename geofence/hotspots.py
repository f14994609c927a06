"""Getis-Ord Gi* hot spots on H3 cells with binary k-ring weights (self included).

Follows esda's ``G_Local(y, w, transform="B", star=True)`` so the two can be compared:

* ``G*_i = sum_j w_ij y_j / sum_j y_j`` with ``w_ij = 1`` when ``grid_distance(i, j) <= k``
  and ``j`` is in the frame (the frame *is* the study area: cells missing from it are not
  zeros, they do not exist - use ``pad_with_neighbours`` to add zero cells).
* Analytic moments under normality: ``E = W_i / n``,
  ``V = W_i (n - W_i) / (n - 1) / n^2 * s^2 / ybar^2``; ``z = (G - E) / sqrt(V)``;
  ``p_norm = norm.sf(|z|)`` (one-sided, as esda).
* Conditional permutation: for each cell, its own value stays put and ``W_i - 1`` values are
  drawn without replacement from the other cells. ``p_sim`` is esda's ``"directed"``
  (folded) pseudo p-value ``(min(larger, P - larger) + 1) / (P + 1)``, or ``"greater"``.
  Draws are shared across cells (one ``(P, K)`` index array, as esda does) and evaluated in
  vectorised chunks of cells.
"""

from __future__ import annotations

from typing import Final, Literal

import numpy as np
import numpy.typing as npt
import polars as pl
import polars_h3 as plh3
from scipy import sparse
from scipy.stats import norm

from geofence.errors import GeofenceError

Alternative = Literal["directed", "greater"]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Elements (cells x permutations x neighbours) evaluated per chunk.
_CHUNK_ELEMENTS: Final = 1 << 22

GI_SCHEMA: Final = pl.Schema(
    {
        "cell": pl.UInt64(),
        "count": pl.Float64(),
        "n_neighbours": pl.Int64(),
        "gi": pl.Float64(),
        "z": pl.Float64(),
        "p_norm": pl.Float64(),
        "p_sim": pl.Float64(),
    }
)


class HotspotInputError(GeofenceError, ValueError):
    """The cell counts handed to Gi* cannot be analysed."""


def _cells_u64(frame: pl.DataFrame, where: str) -> pl.DataFrame:
    missing = [c for c in ("cell", "count") if c not in frame.columns]
    if missing:
        raise HotspotInputError(f"{where}: missing column(s) {missing}; got {frame.columns}")
    cell = pl.col("cell")
    as_u64 = plh3.str_to_int(cell) if frame.schema["cell"] == pl.String else cell.cast(pl.UInt64)
    out = frame.select(cell=as_u64, count=pl.col("count").cast(pl.Float64))
    if out["cell"].null_count() or out["count"].null_count():
        raise HotspotInputError(f"{where}: cell or count has nulls")
    if out["cell"].n_unique() != out.height:
        raise HotspotInputError(f"{where}: cells are not unique")
    return out


def pad_with_neighbours(cell_counts: pl.DataFrame, *, k_ring: int = 1) -> pl.DataFrame:
    """Add every cell within ``k_ring`` of a counted cell with ``count = 0`` (UInt64 cells)."""
    counts = _cells_u64(cell_counts, "pad_with_neighbours(cell_counts)")
    ring = counts.select(cell=plh3.grid_disk("cell", k_ring)).explode("cell").unique()
    return (
        ring.join(counts, on="cell", how="left")
        .with_columns(pl.col("count").fill_null(0.0))
        .sort("cell")
    )


def star_weights(cells: pl.Series, *, k_ring: int = 1) -> sparse.csr_matrix:
    """Binary ``n x n`` weights: 1 where two cells of ``cells`` are within ``k_ring`` (self too)."""
    index = pl.DataFrame({"cell": cells.cast(pl.UInt64)}).with_row_index("i")
    pairs = (
        index.with_columns(neighbour=plh3.grid_disk("cell", k_ring))
        .explode("neighbour")
        .join(index.select(neighbour="cell", j="i"), on="neighbour")
    )
    n = index.height
    return sparse.csr_matrix(
        (
            np.ones(pairs.height, dtype=np.float64),
            (pairs["i"].to_numpy().astype(np.int64), pairs["j"].to_numpy().astype(np.int64)),
        ),
        shape=(n, n),
    )


def _distinct_draws(rng: np.random.Generator, n_pool: int, shape: tuple[int, int]) -> IntArray:
    """``shape[0]`` rows of ``shape[1]`` distinct indices in ``[0, n_pool)`` (rejection)."""
    draws = rng.integers(0, n_pool, size=shape)
    while True:
        ordered = np.sort(draws, axis=1)
        bad = (np.diff(ordered, axis=1) == 0).any(axis=1)
        if not bad.any():
            return draws
        draws[bad] = rng.integers(0, n_pool, size=(int(bad.sum()), shape[1]))


def _permutation_p(
    y: FloatArray,
    lag: FloatArray,
    n_others: IntArray,
    *,
    permutations: int,
    seed: int | None,
    alternative: Alternative,
    draws: IntArray | None,
) -> FloatArray:
    n = len(y)
    k_max = int(n_others.max()) if n else 0
    if k_max == 0:
        return np.ones(n)
    if k_max > n - 1:
        raise HotspotInputError(f"a cell has {k_max} neighbours but only {n - 1} other cells")
    if draws is None:
        draws = _distinct_draws(np.random.default_rng(seed), n - 1, (permutations, k_max))
    elif draws.shape[0] != permutations or draws.shape[1] < k_max:
        raise HotspotInputError(
            f"draws has shape {draws.shape}; expected ({permutations}, >= {k_max})"
        )
    draws = draws[:, :k_max]
    slots = np.arange(k_max)
    larger = np.empty(n, dtype=np.int64)
    chunk = max(1, _CHUNK_ELEMENTS // (permutations * k_max))
    for lo in range(0, n, chunk):  # chunks of cells, each fully vectorised
        ids = np.arange(lo, min(lo + chunk, n))
        # draws index the n - 1 *other* cells: skip the cell itself
        picked = draws[None, :, :] + (draws[None, :, :] >= ids[:, None, None])
        used = slots[None, None, :] < n_others[ids, None, None]
        simulated = np.where(used, y[picked], 0.0).sum(axis=2) + y[ids, None]
        larger[ids] = (simulated >= lag[ids, None]).sum(axis=1)
    if alternative == "directed":
        larger = np.minimum(larger, permutations - larger)
    return np.asarray((larger + 1.0) / (permutations + 1.0), dtype=np.float64)


def gi_star(
    cell_counts: pl.DataFrame,
    *,
    k_ring: int = 1,
    permutations: int = 999,
    seed: int | None = None,
    alternative: Alternative = "directed",
    draws: IntArray | None = None,
) -> pl.DataFrame:
    """Getis-Ord Gi* per cell of ``cell_counts`` (``cell`` UInt64 or str, ``count``).

    ``draws`` optionally replaces the random draws: a ``(permutations, >= max neighbours)``
    array of distinct indices into the ``n - 1`` other cells (cells sorted by id), e.g. to
    reproduce esda's draws exactly.

    Returns ``GI_SCHEMA`` sorted by cell: ``gi`` (G*), ``z``, analytic ``p_norm`` and
    ``p_sim`` from ``permutations`` conditional permutations (null when 0).
    A hot spot is ``z > 0`` with a small p.
    """
    if k_ring < 1:
        raise HotspotInputError(f"k_ring={k_ring}; Gi* needs a neighbourhood of at least 1")
    if permutations < 0:
        raise HotspotInputError(f"permutations={permutations} is negative")
    counts = _cells_u64(cell_counts, "gi_star(cell_counts)").sort("cell")
    n = counts.height
    y = counts["count"].to_numpy().astype(np.float64)
    total = float(y.sum())
    if n < 2 or total <= 0:
        raise HotspotInputError(f"gi_star needs >= 2 cells and a positive total; got n={n}")
    weights = star_weights(counts["cell"], k_ring=k_ring)
    lag = np.asarray(weights @ y, dtype=np.float64)
    cardinality = np.asarray(weights.sum(axis=1), dtype=np.float64).ravel()
    mean = total / n
    variance = float((y**2).sum() / n - mean**2)
    statistic = lag / total
    expected = cardinality / n
    spread = cardinality * (n - cardinality) / (n - 1) / n**2 * variance / mean**2
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (statistic - expected) / np.sqrt(spread)
    p_sim = (
        _permutation_p(
            y,
            lag,
            (cardinality - 1).astype(np.int64),
            permutations=permutations,
            seed=seed,
            alternative=alternative,
            draws=draws,
        )
        if permutations
        else np.full(n, np.nan)
    )
    return pl.DataFrame(
        {
            "cell": counts["cell"],
            "count": y,
            "n_neighbours": (cardinality - 1).astype(np.int64),
            "gi": statistic,
            "z": z,
            "p_norm": norm.sf(np.abs(z)),
            "p_sim": p_sim,
        },
        schema=GI_SCHEMA,
    ).with_columns(pl.col("p_sim").fill_nan(None))


def hot_cells(gi: pl.DataFrame, *, p_max: float, p_column: str = "p_norm") -> pl.Series:
    """Cells with ``z > 0`` and ``p_column < p_max``."""
    return gi.filter((pl.col("z") > 0) & (pl.col(p_column) < p_max))["cell"]
