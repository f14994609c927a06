"""The 2026 trend report's breakpoints, measured on the store, each with the breakdown that
shows where it comes from (aggregated in SQL through the gateway; parameterized).

Definitions (the report's, made concrete on FieldTrace's tables):

* **report → create** (minutes): ``tickets.created_ts - tickets.reported_ts`` over tickets
  with a report time, i.e. a report that preceded the ticket (a phone call typed in later).
  Breakdown: mean per ``channel``, counting a ticket without a report time as 0.
* **accept → depart idle** (hours): first ``departed`` minus first ``accepted`` event per
  ticket, mean over tickets with both. Breakdown: per region and per technician.
* **missing-part revisits** (share): a ticket is *parts-related* when its tag is one for which
  any technician ever requested a part (a ``parts_requested`` event); it was *revisited for a
  missing part* when it has a ``parts_requested`` event and at least two ``arrived`` events.
  Breakdown: per tag, and whether the preparation checklist's ``legacy_unit_parts`` rule
  flagged the ticket before its first visit (its tags name a discontinued unit).
* **customer-unnoticed resolution** (share): of the closed tickets, those with no customer
  chase. A *chase* is a ``customer_chased`` event: the customer called or messaged to ask
  about the open ticket. Breakdown: per region.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import polars_h3 as plh3

from geofence.hotspots import gi_star, hot_cells
from pipelines.store.gateway import Store
from pipelines.views import MILESTONES_SQL
from pipelines.views.checklist import LEGACY_UNIT_TAGS

# The report's published values (2026 trend report; the unnoticed rate has none).
REPORT_VALUES: dict[str, float | None] = {
    "report → create": 17.0,
    "accept → depart idle": 4.2,
    "missing-part revisits": 0.31,
    "customer-unnoticed resolution": None,
}
UNITS: dict[str, str] = {
    "report → create": "min",
    "accept → depart idle": "h",
    "missing-part revisits": "share",
    "customer-unnoticed resolution": "share",
}
TOLERANCE = 0.10  # a store value within ±10 % of the report's reproduces it


@dataclass(frozen=True)
class Breakdown:
    """One breakpoint's figure and its breakdown (``group``, ``n``, ``value`` per row)."""

    figure: str
    value: float | None
    n: int
    dimension: str
    rows: pl.DataFrame


def report_to_create(store: Store) -> Breakdown:
    head = store.query(
        "SELECT count(*) AS n, avg(epoch(created_ts - reported_ts)) / 60.0 AS value "
        "FROM tickets WHERE reported_ts IS NOT NULL AND reported_ts <= created_ts"
    ).row(0, named=True)
    rows = store.query(
        "SELECT coalesce(channel, '(none)') AS \"group\", count(*) AS n, "
        "avg(CASE WHEN reported_ts <= created_ts THEN epoch(created_ts - reported_ts) "
        "ELSE 0 END) / 60.0 AS value FROM tickets GROUP BY 1 ORDER BY value DESC, 1"
    )
    return Breakdown("report → create", head["value"], head["n"], "channel", rows)


_IDLE_SQL = f"""
SELECT t.region, m.technician_id, epoch(m.departed_ts - m.accepted_ts) / 3600.0 AS hours
FROM tickets t JOIN ({MILESTONES_SQL}) m USING (ticket_id)
WHERE m.accepted_ts IS NOT NULL AND m.departed_ts >= m.accepted_ts
"""


def accept_to_depart(store: Store, *, by: str = "region") -> Breakdown:
    """Idle hours; ``by`` is ``region`` or ``technician`` (a fixed column choice)."""
    column = {"region": "region", "technician": "technician_id"}[by]
    head = store.query(f"SELECT count(*) AS n, avg(hours) AS value FROM ({_IDLE_SQL})").row(
        0, named=True
    )
    rows = store.query(
        f"SELECT coalesce({column}, '(none)') AS \"group\", count(*) AS n, avg(hours) AS value "
        f"FROM ({_IDLE_SQL}) GROUP BY 1 ORDER BY value DESC, 1"
    )
    return Breakdown("accept → depart idle", head["value"], head["n"], by, rows)


_PARTS_SQL = f"""
WITH m AS ({MILESTONES_SQL}),
parts_tags AS (
  SELECT DISTINCT t.tag FROM tickets t JOIN m USING (ticket_id) WHERE m.n_parts > 0
)
SELECT t.ticket_id, t.tag, t.region,
  list_has_any(coalesce(t.tags, []), ?::VARCHAR[]) AS flagged,
  (m.n_parts > 0 AND m.n_arrived >= 2) AS revisited
FROM tickets t JOIN m USING (ticket_id) WHERE t.tag IN (SELECT tag FROM parts_tags)
"""


def missing_part_revisits(store: Store) -> Breakdown:
    params = [list(LEGACY_UNIT_TAGS)]
    head = store.query(
        f"SELECT count(*) AS n, avg(revisited::INTEGER) AS value FROM ({_PARTS_SQL})", params
    ).row(0, named=True)
    rows = store.query(
        "SELECT CASE WHEN flagged THEN 'flagged: legacy unit' ELSE 'not flagged' END "
        "|| ' · ' || tag AS \"group\", count(*) AS n, avg(revisited::INTEGER) AS value, "
        f"flagged FROM ({_PARTS_SQL}) GROUP BY ALL ORDER BY flagged DESC, value DESC, 1",
        params,
    )
    dimension = "checklist flag · tag"
    return Breakdown("missing-part revisits", head["value"], head["n"], dimension, rows)


def parts_tags(store: Store) -> list[str]:
    """The tags this store counts as parts-related (see the module docstring)."""
    return store.query(
        f"SELECT DISTINCT t.tag FROM tickets t JOIN ({MILESTONES_SQL}) m USING (ticket_id) "
        "WHERE m.n_parts > 0 AND t.tag IS NOT NULL ORDER BY 1"
    )["tag"].to_list()


_CLOSED_SQL = f"""
SELECT t.region, (m.n_chased = 0) AS unnoticed
FROM tickets t JOIN ({MILESTONES_SQL}) m USING (ticket_id) WHERE m.closed_ts IS NOT NULL
"""


def unnoticed_resolution(store: Store) -> Breakdown:
    head = store.query(
        f"SELECT count(*) AS n, avg(unnoticed::INTEGER) AS value FROM ({_CLOSED_SQL})"
    ).row(0, named=True)
    rows = store.query(
        "SELECT coalesce(region, '(none)') AS \"group\", count(*) AS n, "
        f"avg(unnoticed::INTEGER) AS value FROM ({_CLOSED_SQL}) GROUP BY 1 ORDER BY value, 1"
    )
    return Breakdown("customer-unnoticed resolution", head["value"], head["n"], "region", rows)


def report_breakdowns(store: Store) -> list[Breakdown]:
    """The four breakpoints in the report's order."""
    return [
        report_to_create(store),
        accept_to_depart(store),
        missing_part_revisits(store),
        unnoticed_resolution(store),
    ]


def report_table(breakdowns: list[Breakdown]) -> pl.DataFrame:
    """One row per breakpoint: report value, store value, whether it is within ±10 %, and the
    breakdown's most extreme group (where the figure comes from). Pure."""
    rows = []
    for b in breakdowns:
        report = REPORT_VALUES[b.figure]
        within = (
            None
            if report is None or b.value is None
            else abs(b.value - report) <= TOLERANCE * report
        )
        top = b.rows.row(0, named=True) if b.rows.height else None
        rows.append(
            {
                "figure": b.figure,
                "unit": UNITS[b.figure],
                "report": report,
                "value": b.value,
                "n": b.n,
                "within_10pct": within,
                "dimension": b.dimension,
                "top_group": None if top is None else top["group"],
                "top_value": None if top is None else top["value"],
            }
        )
    return pl.DataFrame(
        rows,
        schema={
            "figure": pl.String,
            "unit": pl.String,
            "report": pl.Float64,
            "value": pl.Float64,
            "n": pl.Int64,
            "within_10pct": pl.Boolean,
            "dimension": pl.String,
            "top_group": pl.String,
            "top_value": pl.Float64,
        },
    )


# -- where the missing-part revisits cluster: Getis-Ord Gi* over H3 cells ----------------
HOTSPOT_RESOLUTION = 7  # H3 cells of ~5.2 km² (edge ~1.4 km)
HOTSPOT_K_RING = 1
HOTSPOT_P_MAX = 0.05
HOTSPOT_PERMUTATIONS = 999


def revisit_cell_counts(store: Store, *, resolution: int = HOTSPOT_RESOLUTION) -> pl.DataFrame:
    """Per H3 cell holding a parts-related ticket: ``count`` of missing-part revisits and
    ``tickets`` (parts-related). Cells are UInt64 at ``resolution``."""
    tickets = store.query(
        "SELECT p.revisited, t.lat, t.lon FROM (" + _PARTS_SQL + ") p JOIN tickets t "
        "USING (ticket_id) WHERE t.lat IS NOT NULL AND t.lon IS NOT NULL",
        [list(LEGACY_UNIT_TAGS)],
    )
    if tickets.height == 0:
        return pl.DataFrame(schema={"cell": pl.UInt64, "count": pl.Float64, "tickets": pl.Int64})
    return (
        tickets.with_columns(plh3.latlng_to_cell("lat", "lon", resolution).alias("cell"))
        .group_by("cell")
        .agg(
            pl.col("revisited").cast(pl.Float64).sum().alias("count"),
            pl.len().cast(pl.Int64).alias("tickets"),
        )
        .sort("cell")
    )


def revisit_hotspots(
    store: Store,
    *,
    resolution: int = HOTSPOT_RESOLUTION,
    k_ring: int = HOTSPOT_K_RING,
    p_max: float = HOTSPOT_P_MAX,
    permutations: int = HOTSPOT_PERMUTATIONS,
) -> pl.DataFrame:
    """Gi* of missing-part revisit counts per H3 cell.

    The study area is the cells holding parts-related tickets: a cell there with no revisit
    is a real zero, a cell without such tickets is not part of the question. A cell is
    ``hot`` when ``z > 0``, its permutation ``p_sim < p_max`` and it has at least one
    neighbour in the study area (alone, Gi* has no neighbourhood to compare). Seeded, so the
    page is stable. Adds ``lat``/``lon`` (cell centre) and ``cell_id`` (hex string).
    """
    counts = revisit_cell_counts(store, resolution=resolution)
    if counts.height < 2 or counts["count"].sum() <= 0:
        return pl.DataFrame()
    gi = gi_star(counts.select("cell", "count"), k_ring=k_ring, permutations=permutations, seed=0)
    significant = set(hot_cells(gi, p_max=p_max, p_column="p_sim").to_list())
    return gi.with_columns(
        (pl.col("cell").is_in(list(significant)) & (pl.col("n_neighbours") > 0)).alias("hot"),
        plh3.cell_to_lat("cell").alias("lat"),
        plh3.cell_to_lng("cell").alias("lon"),
        plh3.int_to_str("cell").alias("cell_id"),
    )
