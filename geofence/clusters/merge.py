"""Firing cells into clusters: merge adjacent cells, classify the trend, explain an alert."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Final, TypedDict

import h3
import numpy as np
import polars as pl
import polars_h3 as plh3
import shapely.geometry
from scipy import sparse
from scipy.sparse import csgraph

from geofence.clusters.counts import _require_columns, _with_cells, cell_column
from geofence.clusters.rules import ClusterInputError
from geofence.clusters.significance import FIRING_SCHEMA
from geofence.clusters.types import (
    Trend,
)

# --------------------------------------------------------------------------- clusters

CLUSTER_GROUP: Final = ("tag", "rule_version", "resolution", "eval_ts")


def merge_adjacent(firing: pl.DataFrame) -> pl.DataFrame:
    """Merge neighbouring firing cells (H3 grid distance 1, same rule and time) into clusters.

    Connected components over the adjacency graph (``scipy.sparse.csgraph``). The key
    ``"{tag}:{smallest cell}"`` is stable while the cluster keeps its smallest cell, so one
    cluster maps to one open alert. Statistics come from the cluster's most significant cell.
    """
    _require_columns(firing, tuple(FIRING_SCHEMA), "merge_adjacent(firing)")
    group = list(CLUSTER_GROUP)
    nodes = firing.with_row_index("node")
    neighbours = (
        nodes.select(*group, "node", neighbour=plh3.grid_disk("cell", 1))
        .explode("neighbour")
        .join(
            nodes.select(*group, neighbour="cell", other="node"),
            on=[*group, "neighbour"],
        )
    )
    n = nodes.height
    graph = sparse.coo_matrix(
        (
            np.ones(neighbours.height, dtype=np.int8),
            (neighbours["node"].to_numpy(), neighbours["other"].to_numpy()),
        ),
        shape=(n, n),
    )
    _, labels = csgraph.connected_components(graph, directed=False)
    return (
        nodes.with_columns(component=pl.Series(labels, dtype=pl.Int64))
        .sort("p_value", "count", descending=[False, True])
        .group_by(*group, "component", maintain_order=True)
        .agg(
            pl.col("cell").sort().alias("cells"),
            pl.col("cell").min().alias("key_cell"),
            pl.len().alias("n_cells"),
            pl.col("count").max().alias("max_count"),
            pl.col(
                "k_ring", "window_start", "threshold", "expected", "p_value", "recurrence_days"
            ).first(),
            pl.col("cell").first().alias("peak_cell"),
            pl.col("count").first().alias("peak_count"),
        )
        .with_columns(
            cluster_key=pl.concat_str(pl.col("tag"), pl.lit(":"), plh3.int_to_str("key_cell")),
        )
        .drop("component", "key_cell")
        .sort("tag", "rule_version", "eval_ts", "cluster_key")
    )


def classify(previous_count: int | None, current_count: int, *, steady_band: float = 0.1) -> Trend:
    """``new`` without a previous count; ``growing``/``fading`` when the count moved by more
    than ``steady_band`` (relative) up/down, else ``steady``. A count of 0 is ``fading``."""
    if steady_band < 0:
        raise ClusterInputError(f"steady_band={steady_band} is negative")
    if previous_count is None:
        return "new"
    if current_count == 0 and previous_count > 0:
        return "fading"
    if current_count > previous_count * (1 + steady_band):
        return "growing"
    if current_count < previous_count * (1 - steady_band):
        return "fading"
    return "steady"


def classify_clusters(
    current: pl.DataFrame,
    previous: pl.DataFrame,
    *,
    count_column: str = "member_count",
    steady_band: float = 0.1,
) -> pl.DataFrame:
    """``classify`` for whole frames keyed by ``cluster_key``; vanished clusters are listed
    as ``fading`` with count 0. Returns ``cluster_key, previous_count, current_count, trend``."""
    for frame, name in ((current, "current"), (previous, "previous")):
        _require_columns(frame, ("cluster_key", count_column), f"classify_clusters({name})")
    joined = (
        current.select("cluster_key", current_count=pl.col(count_column))
        .join(
            previous.select("cluster_key", previous_count=pl.col(count_column)),
            on="cluster_key",
            how="full",
            coalesce=True,
        )
        .with_columns(pl.col("current_count").fill_null(0))
    )
    prev, cur = pl.col("previous_count"), pl.col("current_count")
    trend = (
        pl.when(prev.is_null())
        .then(pl.lit("new"))
        .when((cur == 0) & (prev > 0))
        .then(pl.lit("fading"))
        .when(cur > prev * (1 + steady_band))
        .then(pl.lit("growing"))
        .when(cur < prev * (1 - steady_band))
        .then(pl.lit("fading"))
        .otherwise(pl.lit("steady"))
    )
    return joined.select("cluster_key", "previous_count", "current_count", trend=trend).sort(
        "cluster_key"
    )


class HourCount(TypedDict):
    hour: datetime
    count: int


class ClusterExplanation(TypedDict):
    """Everything an alert needs to say why it fired."""

    cluster_key: str
    tag: str
    rule_version: str
    resolution: int
    k_ring: int
    cells: list[str]
    geometry_wkt: str
    centroid_lat: float
    centroid_lon: float
    ticket_ids: list[str]
    member_count: int
    counts_by_hour: list[HourCount]
    peak_cell: str
    peak_count: int
    threshold: int
    expected: float
    p_value: float
    recurrence_days: float
    window_start: datetime
    window_end: datetime


def member_tickets(clusters: pl.DataFrame, tickets: pl.DataFrame) -> pl.DataFrame:
    """``cluster_key, ticket_id, created_ts``: tickets of the cluster's tag located in one of
    its cells within ``(window_start, eval_ts]`` (not the wider rings around the cells)."""
    parts: list[pl.DataFrame] = []
    for resolution in clusters["resolution"].unique().sort().to_list():
        name = cell_column(resolution)
        cells = (
            clusters.filter(pl.col("resolution") == resolution)
            .select("cluster_key", "tag", "window_start", "eval_ts", cell=pl.col("cells"))
            .explode("cell")
        )
        located = _with_cells(tickets, resolution).select(
            "ticket_id", "created_ts", "tag", cell=pl.col(name)
        )
        parts.append(
            cells.join(located, on=["tag", "cell"])
            .filter(pl.col("created_ts").is_between("window_start", "eval_ts", closed="right"))
            .select("cluster_key", "ticket_id", "created_ts")
        )
    schema = pl.Schema(
        {
            "cluster_key": pl.String(),
            "ticket_id": pl.String(),
            "created_ts": pl.Datetime("us", "UTC"),
        }
    )
    if not parts:
        return pl.DataFrame(schema=schema)
    return pl.concat(parts).sort("cluster_key", "ticket_id")


def cells_wkt(cells: Sequence[str]) -> str:
    """MULTIPOLYGON WKT (lon lat) of the union of H3 cell boundaries."""
    shape = shapely.geometry.shape(h3.cells_to_h3shape(list(cells)).__geo_interface__)
    if isinstance(shape, shapely.geometry.Polygon):
        shape = shapely.geometry.MultiPolygon([shape])
    return str(shape.wkt)


def explain(clusters: pl.DataFrame, tickets: pl.DataFrame) -> list[ClusterExplanation]:
    """One explanation per cluster row of ``merge_adjacent`` (ticket ids sorted)."""
    members = member_tickets(clusters, tickets)
    ids = members.group_by("cluster_key").agg(pl.col("ticket_id").sort())
    hourly = (
        members.group_by("cluster_key", hour=pl.col("created_ts").dt.truncate("1h"))
        .len()
        .sort("cluster_key", "hour")
        .group_by("cluster_key", maintain_order=True)
        .agg(pl.struct("hour", count=pl.col("len")).alias("counts_by_hour"))
    )
    rows = (
        clusters.join(ids, on="cluster_key", how="left")
        .join(hourly, on="cluster_key", how="left")
        .with_columns(
            cells_hex=pl.col("cells").list.eval(plh3.int_to_str(pl.element())),
            peak_hex=plh3.int_to_str("peak_cell"),
            centroid_lat=pl.col("cells").list.eval(plh3.cell_to_lat(pl.element())).list.mean(),
            centroid_lon=pl.col("cells").list.eval(plh3.cell_to_lng(pl.element())).list.mean(),
        )
        .sort("cluster_key")
    )
    explanations: list[ClusterExplanation] = []
    for row in rows.iter_rows(named=True):  # one iteration per cluster, not per ticket
        ticket_ids: list[str] = row["ticket_id"] or []
        explanations.append(
            ClusterExplanation(
                cluster_key=row["cluster_key"],
                tag=row["tag"],
                rule_version=row["rule_version"],
                resolution=row["resolution"],
                k_ring=row["k_ring"],
                cells=row["cells_hex"],
                geometry_wkt=cells_wkt(row["cells_hex"]),
                centroid_lat=row["centroid_lat"],
                centroid_lon=row["centroid_lon"],
                ticket_ids=ticket_ids,
                member_count=len(ticket_ids),
                counts_by_hour=[
                    HourCount(hour=h["hour"], count=h["count"])
                    for h in (row["counts_by_hour"] or [])
                ],
                peak_cell=row["peak_hex"],
                peak_count=row["peak_count"],
                threshold=row["threshold"],
                expected=row["expected"],
                p_value=row["p_value"],
                recurrence_days=row["recurrence_days"],
                window_start=row["window_start"],
                window_end=row["eval_ts"],
            )
        )
    return explanations


def recurrence_days(p_value: float, window: timedelta) -> float:
    """``window / p`` in days: how often a count this extreme happens by chance."""
    return math.inf if p_value <= 0 else (window / timedelta(days=1)) / p_value
