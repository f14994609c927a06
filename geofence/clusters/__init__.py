"""Space-time clusters of tagged tickets on H3 rings, with a Poisson significance check.

The pipeline, one pure stage per function (polars frames and numpy arrays in and out):

1. ``load_rules``          validate rule mappings; an unknown tag fails at load time.
2. ``prepare_tickets``     stamp an H3 cell per resolution; unusable tickets are skipped and
                           counted by reason, never dropped silently.
3. ``fit_baseline``        expected tickets per cell ring and hour of week (empirical Bayes).
4. ``rolling_ring_counts`` tickets of one tag in a cell and its k-ring within
                           ``(t - window, t]``, for many cells and many evaluation times at once.
5. ``evaluate``            counts + baseline -> firing cells (threshold and/or significance).
6. ``merge_adjacent``      neighbouring firing cells -> one cluster with a stable key.
7. ``classify``            new | growing | steady | fading against the previous count.
8. ``explain``             the alert payload: cells, WKT, ticket ids, hourly counts, statistics.

Counting method
---------------
A ticket in cell ``s`` counts for every centre cell ``c`` whose k-ring contains ``s``; the
relation is symmetric, so the centres are ``grid_disk(s, k)``. Instead of exploding every
ticket (7x rows for k=1), only the *distinct* source cells are exploded into a sparse
centre x source incidence matrix ``A``. Tickets are binned into the intervals between the
sorted boundaries ``{t} U {t - window}`` (``searchsorted``), a dense source x bin histogram is
built with ``bincount``, multiplied by ``A`` and cumulated along time. The count at ``t`` is
then ``C[t] - C[t - window]`` - exact for any set of evaluation times, with cost
``O(tickets log bins + centres x bins)``.

Significance
------------
The expected count of a centre over a window is ``mu = rate_per_h(cell) * effective_hours``
where ``effective_hours`` sums a 168-value hour-of-week factor (UTC, mean 1) over the window,
and ``rate_per_h`` is an empirical-Bayes (Gamma-Poisson) posterior mean: the prior is fitted
by the method of moments to the history rates of all cells of the tag, and each cell's rate
is shrunk toward it by ``(n_c + a) / (T + b)``. Cells with no history get the prior mean, so
``mu`` is never 0; ``prior_floor_per_h`` bounds it from below when the tag has no history at
all. ``p = P(X >= observed) = poisson.sf(observed - 1, mu)`` and the recurrence interval is
``window / p`` reported in days.

Modules, one per algorithm family: ``rules`` (what fires), ``counts`` (cells, rings, rolling
counts), ``significance`` (baseline, Poisson tail, evaluation) and ``merge`` (clusters, trend,
explanation). This package re-exports their public names.
"""

from __future__ import annotations

from geofence.clusters.counts import (
    cell_column,
    prepare_tickets,
    ring_cells,
    rolling_ring_counts,
)
from geofence.clusters.merge import (
    CLUSTER_GROUP,
    ClusterExplanation,
    HourCount,
    cells_wkt,
    classify,
    classify_clusters,
    explain,
    member_tickets,
    merge_adjacent,
    recurrence_days,
)
from geofence.clusters.rules import ClusterInputError, ClusterRule, ClusterRuleError, load_rules
from geofence.clusters.significance import (
    FIRING_SCHEMA,
    Baseline,
    evaluate,
    evaluate_many,
    fit_baseline,
    fit_baselines,
    fit_rule_baselines,
    poisson_upper_tail,
    touched_cells,
)
from geofence.clusters.types import (
    HOURS_PER_WEEK,
    SKIP_INVALID_LOCATION,
    SKIP_MISSING_LOCATION,
    SKIP_MISSING_TAG,
    SKIP_REASONS,
    TICKET_COLUMNS,
    FireOn,
    Trend,
)

__all__ = [
    "CLUSTER_GROUP",
    "FIRING_SCHEMA",
    "HOURS_PER_WEEK",
    "SKIP_INVALID_LOCATION",
    "SKIP_MISSING_LOCATION",
    "SKIP_MISSING_TAG",
    "SKIP_REASONS",
    "TICKET_COLUMNS",
    "Baseline",
    "ClusterExplanation",
    "ClusterInputError",
    "ClusterRule",
    "ClusterRuleError",
    "FireOn",
    "HourCount",
    "Trend",
    "cell_column",
    "cells_wkt",
    "classify",
    "classify_clusters",
    "evaluate",
    "evaluate_many",
    "explain",
    "fit_baseline",
    "fit_baselines",
    "fit_rule_baselines",
    "load_rules",
    "member_tickets",
    "merge_adjacent",
    "poisson_upper_tail",
    "prepare_tickets",
    "recurrence_days",
    "ring_cells",
    "rolling_ring_counts",
    "touched_cells",
]
