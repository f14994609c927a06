"""Cluster alerts and restock orders: the runner between the store and the pure core.

``run_alerts(store, config, at=...)`` is one evaluation at event time ``at``, in stages:

1. ``read``      tickets of the configured tags in ``(at - window - history, at]``, flagged
                 ``is_new`` when created or ingested after the previous run.
2. ``prepare``   one row per (ticket, tag); tickets without location or tag are skipped and
                 counted by reason (``geofence.clusters.prepare_tickets``).
3. ``evaluate``  per rule: baseline over ``(at - window - history, at - window]``, firing
                 cells at ``at``. Incremental runs evaluate only centres touched by new tickets
                 or by an open alert - exact, since a centre can only start firing by gaining
                 a ticket, and can only stop firing if it was firing (an open alert).
4. ``merge``     adjacent firing cells -> clusters -> explanations.
5. ``match``     a cluster sharing a cell with an open alert of its rule updates that alert
                 (growing / steady / fading); otherwise it opens a new one. An open alert
                 with no firing cluster stays open as ``fading`` until its cells are empty.
6. ``order``     each open alert with a restock rule gets orders topping its total up to
                 ``order_quantity(member_count)``, routed by ``choose_warehouse``; orders of
                 warehouses with a webhook are queued in the outbox (``pipelines.alerts.delivery``).
7. ``write``     alerts, orders, outbox, audit and the run row in one transaction.

Alert ``status`` is ``open`` or ``closed``; its ``trend`` is new / growing / steady / fading.
Orders move open -> sent -> acknowledged -> fulfilled, or to cancelled from any step before
fulfilled; each step is timed in its own column and written to ``audit_log``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import h3
import polars as pl
import polars_h3 as plh3

from geofence.clusters import (
    SKIP_MISSING_TAG,
    Baseline,
    ClusterExplanation,
    ClusterRule,
    cell_column,
    classify,
    evaluate,
    explain,
    fit_rule_baselines,
    member_tickets,
    prepare_tickets,
)
from pipelines.alerts.areas import counted_area, crossed_at, explanation_json
from pipelines.alerts.config import AlertConfig
from pipelines.alerts.orders import (
    RUNNER,
    acknowledge_order,
    audit,
    cancel_order,
    fulfil_order,
    top_up,
)
from pipelines.store.gateway import Store, Tx

__all__ = ["RunReport", "acknowledge_order", "cancel_order", "fulfil_order", "run_alerts"]


@dataclass(frozen=True, slots=True)
class RunReport:
    run_id: str
    at: datetime
    mode: Literal["full", "incremental"]
    tickets_read: int
    skipped: dict[str, int]
    firing_cells: int
    opened: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    orders: list[str] = field(default_factory=list)
    unroutable: list[str] = field(default_factory=list)


def read_tickets(
    store: Store, config: AlertConfig, at: datetime, since: tuple[datetime, datetime] | None
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Stages 1-2: one row per (ticket, configured tag) with ``h3_r{res}`` and ``is_new``."""
    span = max(r.window for r in config.rules) + config.history
    prev_at, prev_ran = since or (at, datetime.max.replace(tzinfo=UTC))
    raw = store.query(
        "SELECT t.ticket_id, t.created_ts, t.lat, t.lon, t.tag, t.tags, t.region, "
        "(t.created_ts > ? OR coalesce(b.finished_at > ?, false)) AS is_new "
        "FROM tickets t LEFT JOIN ingest_batches b ON b.batch_id = t.batch_id "
        "WHERE t.created_ts > ? AND t.created_ts <= ? "
        "AND (t.tag IS NULL OR t.tag = '' OR list_has_any(coalesce(t.tags, [t.tag]), ?))",
        (prev_at, prev_ran, at - span, at, sorted(config.tags)),
    )
    rows = (
        raw.with_columns(
            tag=pl.when(pl.col("tags").list.len() > 0)
            .then(pl.col("tags"))
            .otherwise(pl.concat_list(pl.col("tag")))
        )
        .drop("tags")
        .explode("tag")
        .unique(["ticket_id", "tag"], keep="first", maintain_order=True)
        .filter(pl.col("tag").is_null() | pl.col("tag").is_in(sorted(config.tags)))
    )
    usable, skipped = prepare_tickets(rows, sorted({r.resolution for r in config.rules}))
    # a ticket with any usable tag is not "missing a tag"
    skipped[SKIP_MISSING_TAG] = rows.filter(pl.col("tag").is_null()).height
    return usable, skipped


def _open_alerts(store: Store) -> pl.DataFrame:
    return store.query(
        "SELECT alert_id, cluster_key, tag, rule_version, member_cells, member_ticket_ids, "
        "CAST(json_extract(explanation, '$.now.member_count') AS INTEGER) AS count_now, "
        "crossed_at, first_seen, CAST(json_extract_string(explanation, '$.window.end') "
        "AS TIMESTAMPTZ) AS last_fired FROM cluster_alerts WHERE status = 'open' "
        "ORDER BY first_seen"
    )


def _probe(alerts: pl.DataFrame, rules: Sequence[ClusterRule]) -> pl.DataFrame:
    """Pseudo-tickets at the open alerts' cells, so incremental runs re-evaluate them."""
    parts = [pl.DataFrame(schema={"tag": pl.String})]
    for rule in rules:
        mine = alerts.filter((pl.col("tag") == rule.tag) & (pl.col("rule_version") == rule.version))
        cells = mine.select("tag", cell=pl.col("member_cells")).explode("cell")
        parts.append(
            cells.select("tag", plh3.str_to_int("cell").alias(cell_column(rule.resolution)))
        )
    return pl.concat(parts, how="diagonal_relaxed")


def _match(
    alerts: pl.DataFrame, rule: ClusterRule, cells: list[str], taken: set[str]
) -> dict[str, Any] | None:
    """The oldest open alert of ``rule`` sharing a cell with ``cells`` and not yet matched."""
    wanted = set(cells)
    mine = alerts.filter((pl.col("tag") == rule.tag) & (pl.col("rule_version") == rule.version))
    for row in mine.iter_rows(named=True):  # open alerts of one rule: a handful
        if row["alert_id"] not in taken and wanted.intersection(row["member_cells"]):
            return row
    return None


def _alert_id(rule: ClusterRule, cluster_key: str, at: datetime) -> str:
    digest = hashlib.sha1(f"{rule.version}|{cluster_key}|{at.isoformat()}".encode())
    return "AL-" + digest.hexdigest()[:12]


def _last_run(store: Store) -> tuple[datetime, datetime] | None:
    last = store.query("SELECT eval_ts, ran_at FROM alert_runs ORDER BY eval_ts DESC LIMIT 1")
    return (last[0, 0].astimezone(UTC), last[0, 1].astimezone(UTC)) if last.height else None


@dataclass(frozen=True, slots=True)
class _Evaluation:
    tickets: pl.DataFrame
    baselines: dict[ClusterRule, Baseline]
    firing: pl.DataFrame
    explanations: list[ClusterExplanation]
    firing_cells: dict[str, list[str]]


def _evaluate(
    config: AlertConfig, tickets: pl.DataFrame, alerts: pl.DataFrame, at: datetime, mode: str
) -> _Evaluation:
    """Stages 3-4: baselines, firing cells (touched centres only when incremental), clusters."""
    touched = None
    if mode == "incremental":
        cols = {cell_column(r.resolution) for r in config.rules}
        new = tickets.filter("is_new").select("tag", *sorted(cols))
        touched = pl.concat([new, _probe(alerts, config.rules)], how="diagonal_relaxed")
    baselines = fit_rule_baselines(tickets, config.rules, at=at, history=config.history)
    firing = evaluate(
        tickets, config.rules, at=at, history_start=at, baselines=baselines, touched_by=touched
    )
    clusters = counted_area(firing)
    firing_cells = {
        key: [h3.int_to_str(c) for c in cells]
        for key, cells in clusters.select("cluster_key", "firing_cells").iter_rows()
    }
    return _Evaluation(tickets, baselines, firing, explain(clusters, tickets), firing_cells)


def run_alerts(
    store: Store,
    config: AlertConfig,
    *,
    at: datetime,
    incremental: bool = True,
    now: datetime | None = None,
) -> RunReport:
    """Evaluate every rule at event time ``at`` and write alerts and orders (one transaction).

    ``now`` (wall time, default the clock) stamps detection, orders and audit rows.
    """
    wall = now or datetime.now(UTC)
    previous = _last_run(store)
    mode: Literal["full", "incremental"] = (
        "incremental" if incremental and previous and previous[0] < at else "full"
    )
    tickets, skipped = read_tickets(store, config, at, previous if mode == "incremental" else None)
    alerts = _open_alerts(store)
    ev = _evaluate(config, tickets, alerts, at, mode)
    report = RunReport(
        run_id=f"RUN-{at:%Y%m%dT%H%M%S}-{wall:%Y%m%dT%H%M%S%f}",
        at=at,
        mode=mode,
        tickets_read=tickets["ticket_id"].n_unique(),
        skipped=skipped,
        firing_cells=ev.firing.height,
    )
    warehouses = store.query(
        "SELECT warehouse_id, lat, lon, coverage_wkt, webhook_url FROM warehouses"
    )
    by_key = {(r.tag, r.version): r for r in config.rules}
    with store.transaction() as tx:
        taken: set[str] = set()
        for e in ev.explanations:
            rule = by_key[(e["tag"], e["rule_version"])]
            alert_id = _upsert(
                tx, config, ev, e, rule, _match(alerts, rule, e["cells"], taken), at, wall, report
            )
            taken.add(alert_id)
            placed = top_up(
                tx, config, alert_id, tag=rule.tag, member_count=e["member_count"],
                centroid=(e["centroid_lat"], e["centroid_lon"]), warehouses=warehouses, at=wall,
            )  # fmt: skip
            report.orders.extend([placed.order_id] if placed.order_id else [])
            report.unroutable.extend([alert_id] if placed.unroutable else [])
        for row in alerts.filter(~pl.col("alert_id").is_in(sorted(taken))).iter_rows(named=True):
            rule_or_none = by_key.get((row["tag"], row["rule_version"]))
            if rule_or_none is not None:
                _fade(tx, row, rule_or_none, tickets, at, wall, config.steady_band, report)
        tx.execute(
            "INSERT INTO alert_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                report.run_id, at, wall, mode, config.version, report.tickets_read,
                json.dumps(skipped), ev.firing.height, len(report.opened), len(report.updated),
                len(report.closed), len(report.orders),
            ),
        )  # fmt: skip
    return report


def _upsert(
    tx: Tx, config: AlertConfig, ev: _Evaluation, e: ClusterExplanation, rule: ClusterRule,
    row: dict[str, Any] | None, at: datetime, wall: datetime, report: RunReport,
) -> str:  # fmt: skip
    """Stage 5: update the matched open alert, or open a new one; returns the alert id.

    ``member_ticket_ids``/``member_count`` accumulate every ticket the cluster ever counted
    (restock covers them all); ``explanation.now`` holds the current window's count, which
    sets the trend."""
    now = {"at": at, "member_count": e["member_count"], "firing": True}
    if row is not None:
        alert_id, crossed, first = row["alert_id"], row["crossed_at"], row["first_seen"]
        trend = classify(row["count_now"], e["member_count"], steady_band=config.steady_band)
        # members accumulate: a ticket that left the window was still part of the cluster
        ids = sorted(set(row["member_ticket_ids"]) | set(e["ticket_ids"]))
        e = e | {"ticket_ids": ids, "member_count": len(ids)}
        report.updated.append(alert_id)
    else:
        alert_id, first, trend = _alert_id(rule, e["cluster_key"], at), at, "new"
        crossed = crossed_at(ev.tickets, rule, ev.baselines[rule], e["cells"], at)
        report.opened.append(alert_id)
    doc = explanation_json(
        e, rule, ev.baselines[rule], alert_id=alert_id, trend=trend, crossed_at=crossed,
        first_seen=first, last_updated=at, config_version=config.version,
        now=now,
        firing_cells=ev.firing_cells[e["cluster_key"]],
    )  # fmt: skip
    values = (
        e["cluster_key"], trend, e["member_count"], e["cells"], e["ticket_ids"], e["geometry_wkt"],
        e["centroid_lat"], e["centroid_lon"], doc, at, at,
    )  # fmt: skip
    if row is None:
        tx.execute(
            "INSERT INTO cluster_alerts (cluster_key, trend, member_count, member_cells, "
            "member_ticket_ids, geom_wkt, centroid_lat, centroid_lon, explanation, last_updated, "
            "last_eval_ts, alert_id, tag, status, rule_version, crossed_at, first_seen, "
            "detected_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'open', ?, ?, ?, ?)",
            (*values, alert_id, rule.tag, rule.version, crossed, first, wall),
        )
    else:
        tx.execute(
            "UPDATE cluster_alerts SET cluster_key = ?, trend = ?, member_count = ?, "
            "member_cells = ?, member_ticket_ids = ?, geom_wkt = ?, centroid_lat = ?, "
            "centroid_lon = ?, explanation = ?, last_updated = ?, last_eval_ts = ? "
            "WHERE alert_id = ?",
            (*values, alert_id),
        )
    action = "alert_opened" if row is None else f"alert_{trend}"
    audit(tx, wall, RUNNER, action, "cluster_alert", alert_id, eval_ts=at, n=e["member_count"])
    return alert_id


def _fade(
    tx: Tx, row: dict[str, Any], rule: ClusterRule, tickets: pl.DataFrame, at: datetime,
    wall: datetime, steady_band: float, report: RunReport,
) -> None:  # fmt: skip
    """An open alert whose cells no longer fire: count what is left; close it when its area
    is empty or it has not fired for a whole window (background keeps a few tickets)."""
    cells = pl.Series([[h3.str_to_int(c) for c in row["member_cells"]]], dtype=pl.List(pl.UInt64))
    probe = pl.DataFrame(
        {"cluster_key": [row["cluster_key"]], "tag": [rule.tag], "resolution": [rule.resolution],
         "cells": cells, "window_start": [at - rule.window], "eval_ts": [at]},
    )  # fmt: skip
    ids = member_tickets(probe, tickets)["ticket_id"].to_list()
    trend = classify(row["count_now"], len(ids), steady_band=steady_band)
    status = "closed" if not ids or at - row["last_fired"] >= rule.window else "open"
    # the evidence (members at the last firing evaluation) stays; what is left goes to "now"
    now = {"at": str(at), "member_count": len(ids), "member_ticket_ids": ids, "firing": False}
    patch = {"trend": trend, "status": status, "last_updated": str(at), "now": now}
    tx.execute(
        "UPDATE cluster_alerts SET trend = ?, status = ?, closed_at = ?, last_updated = ?, "
        "last_eval_ts = ?, explanation = json_merge_patch(explanation, ?) WHERE alert_id = ?",
        (trend, status, at if status == "closed" else None, at, at, json.dumps(patch),
         row["alert_id"]),
    )  # fmt: skip
    (report.closed if status == "closed" else report.updated).append(row["alert_id"])
    audit(tx, wall, RUNNER, f"alert_{status}_{trend}", "cluster_alert", row["alert_id"], n=len(ids))
