"""Pure helpers of the alerts runner (no I/O): counted areas, crossing time, explanation JSON.

The core's clusters are *firing centres*; a centre fires on the tickets of its whole k-ring.
An alert should name those tickets, so its area is the firing centres plus their k-rings, and
two clusters whose areas overlap (centres up to ``2k`` apart, sharing counted tickets) are one
cluster - otherwise one leak seen from two sides would open two alerts.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from typing import Any, Final

import h3
import numpy as np
import polars as pl
import polars_h3 as plh3
from scipy import sparse
from scipy.sparse import csgraph

from geofence.clusters import (
    CLUSTER_GROUP,
    Baseline,
    ClusterExplanation,
    ClusterRule,
    cell_column,
    evaluate_many,
    merge_adjacent,
    ring_cells,
)

_RULE_FIELDS: Final = ("tag", "version", "more_than", "resolution", "k_ring", "fire_on")


def counted_area(firing: pl.DataFrame) -> pl.DataFrame:
    """``merge_adjacent`` clusters, merged further where their counted areas overlap.

    ``cells`` becomes the counted area (firing centres + k-rings) and ``firing_cells`` keeps
    the centres; statistics come from the most significant part; the key is
    ``"{tag}:{smallest firing cell}"``.
    """
    clusters = merge_adjacent(firing).with_row_index("_i")
    if clusters.height == 0:
        return clusters.drop("_i").with_columns(firing_cells=pl.col("cells"))
    centres = clusters.select("_i", "k_ring", cell=pl.col("cells")).explode("cell")
    area = pl.concat(
        centres.filter(pl.col("k_ring") == k).select("_i", cell=plh3.grid_disk("cell", k))
        for k in centres["k_ring"].unique().to_list()
    ).explode("cell")
    keyed = area.unique().join(clusters.select("_i", *CLUSTER_GROUP), on="_i")
    pairs = keyed.join(keyed, on=[*CLUSTER_GROUP, "cell"], suffix="_o")
    n = clusters.height
    graph = sparse.coo_matrix(
        (np.ones(pairs.height), (pairs["_i"].to_numpy(), pairs["_i_o"].to_numpy())), shape=(n, n)
    )
    _, labels = csgraph.connected_components(graph, directed=False)
    comp = pl.Series("_c", labels, dtype=pl.Int64)
    areas = (
        area.join(clusters.select("_i").with_columns(comp), on="_i")
        .group_by("_c")
        .agg(area=pl.col("cell").unique().sort())
    )
    return (
        clusters.with_columns(comp)
        .sort("p_value", "peak_count", descending=[False, True])
        .group_by("_c", maintain_order=True)
        .agg(
            pl.all().exclude("cells", "_i", "max_count", "n_cells").first(),
            firing_cells=pl.col("cells").explode().unique().sort(),
            max_count=pl.col("max_count").max(),
        )
        .join(areas, on="_c")
        .with_columns(
            cells=pl.col("area"),
            n_cells=pl.col("firing_cells").list.len(),
            cluster_key=pl.concat_str(
                pl.col("tag"), pl.lit(":"), plh3.int_to_str(pl.col("firing_cells").list.min())
            ),
        )
        .drop("_c", "area")
        .sort("tag", "rule_version", "eval_ts", "cluster_key")
    )


def crossed_at(
    tickets: pl.DataFrame, rule: ClusterRule, baseline: Baseline, cells: list[str], at: datetime
) -> datetime:
    """The earliest ticket time in ``(at - window, at]`` at which one of ``cells`` fired.

    Counts change only when a ticket enters (its ``created_ts``) or leaves the window, so the
    first firing moment is one of the ticket times (or ``at`` itself).
    """
    col = cell_column(rule.resolution)
    ids = [h3.str_to_int(c) for c in cells]
    ring = pl.Series(ring_cells(ids, rule.k_ring), dtype=pl.UInt64).implode()
    times = tickets.filter(
        (pl.col("tag") == rule.tag)
        & pl.col(col).is_in(ring)
        & pl.col("created_ts").is_between(at - rule.window, at, closed="right")
    )["created_ts"]
    probe = pl.DataFrame({"tag": [rule.tag] * len(ids), col: pl.Series(ids, dtype=pl.UInt64)})
    firing = evaluate_many(
        tickets,
        [rule],
        eval_times=times.append(pl.Series([at], dtype=times.dtype)),
        baselines={rule: baseline},
        touched_by=probe,
    ).filter(pl.col("cell").is_in(pl.Series(ids, dtype=pl.UInt64).implode()))
    first = firing["eval_ts"].min()
    return first if isinstance(first, datetime) else at


def explanation_json(e: ClusterExplanation, rule: ClusterRule, base: Baseline, **extra: Any) -> str:
    """The alert's ``explanation``: everything an auditor needs to see why it fired."""
    doc: dict[str, Any] = dict(e)
    recurrence = doc.pop("recurrence_days")
    doc |= {
        "member_ticket_ids": doc.pop("ticket_ids"),
        "member_cells": doc.pop("cells"),
        "window": {"start": doc.pop("window_start"), "end": doc.pop("window_end")},
        "rule": {f: getattr(rule, f) for f in _RULE_FIELDS}
        | {
            "threshold": rule.min_count_to_fire,
            "window_h": rule.window / timedelta(hours=1),
            "p_value_max": rule.p_value_max,
        },
        "baseline": {
            "expected": doc.pop("expected"),
            "history_start": base.history_start,
            "history_end": base.history_end,
            "prior_rate_per_h": base.prior_rate_per_h,
        },
        "recurrence_days": recurrence if math.isfinite(recurrence) else None,
    }
    return json.dumps(doc | extra, default=str, sort_keys=True)
