"""``fieldtrace alerts ...``: evaluate cluster rules, route restock orders, deliver, export.

Mounted by the main app: ``app.add_typer(alerts_app, name="alerts")``. Store and config come
from the main app's ``--store``/``--config`` (``cli.main.settings``); ``--rules`` picks a
rules TOML (default: the built-in rules of ``pipelines.alerts.config``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import polars as pl
import typer
from rich.console import Console
from rich.table import Table

from cli import common
from pipelines.errors import FieldTraceError
from pipelines.store.gateway import Store
from pipelines.vocabulary import ORDER_OPEN

if TYPE_CHECKING:
    from pipelines.alerts.delivery import DeliveryReport
    from pipelines.alerts.runner import RunReport
    from pipelines.credentials import WebhookSecrets

# The alert machinery (rules config -> geofence.clusters -> scipy) is imported inside the
# commands that use it, so other ``fieldtrace`` commands do not pay for it at start-up.

alerts_app = typer.Typer(
    name="alerts",
    help="Ticket clusters -> restock alerts -> orders delivered to warehouse webhooks.",
    no_args_is_help=True,
)
out = Console()
err = Console(stderr=True)
ALERT_LISTS = ("open", "closed", "all")
RulesOpt = Annotated[Path | None, typer.Option("--rules", help="Rules TOML (default: built-in).")]


def _store() -> Store:
    return common.open_store()


def _secrets() -> WebhookSecrets:
    from pipelines.credentials import WebhookSecrets

    return WebhookSecrets(common.settings())


def _parse_time(store: Store, value: str) -> datetime:
    if value == "now":
        return datetime.now(UTC)
    if value == "latest":
        latest = store.scalar("SELECT max(created_ts) FROM tickets")
        if latest is None:
            raise typer.BadParameter("--at latest: the store has no tickets")
        assert isinstance(latest, datetime)
        return latest.astimezone(UTC)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not an ISO time, 'now' or 'latest'") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def lead_times(store: Store, alert_ids: list[str]) -> pl.DataFrame:
    """Per order: crossing (event time) -> detection (event time) + order -> delivery (wall)."""
    return store.query(
        "SELECT a.alert_id, a.tag, a.trend, a.member_count, a.crossed_at, a.first_seen, "
        "o.order_id, o.warehouse_id, o.routed_by, o.sku, o.quantity, o.unit, o.status, "
        "date_diff('second', a.crossed_at, a.first_seen) AS detection_lag_s, "
        "epoch(x.delivered_at) - epoch(o.created_at) AS delivery_s, x.attempts "
        "FROM cluster_alerts a LEFT JOIN restock_orders o ON o.alert_id = a.alert_id "
        "LEFT JOIN outbox x ON x.order_id = o.order_id "
        "WHERE list_contains(?, a.alert_id) ORDER BY a.first_seen, a.alert_id, o.order_id",
        (alert_ids,),
    ).with_columns(lead_s=pl.col("detection_lag_s") + pl.col("delivery_s"))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def _print_summary(reports: list[RunReport], rows: pl.DataFrame, sent: DeliveryReport) -> None:
    last = reports[-1]
    skipped = {k: sum(r.skipped[k] for r in reports) for k in last.skipped}
    out.print(
        f"[bold]{len(reports)} evaluation(s)[/] up to {last.at:%Y-%m-%d %H:%M} UTC "
        f"({last.mode}); tickets read {last.tickets_read:,}; skipped {skipped}; "
        f"opened {sum(len(r.opened) for r in reports)}, orders "
        f"{sum(len(r.orders) for r in reports)}; delivered {sent.delivered}, "
        f"failed attempts {sent.failed}"
    )
    table = Table(title="Alerts and restock orders")
    cols = ("alert", "tag", "trend", "members", "crossed (event)", "order", "warehouse", "qty")
    for col in (*cols, "status", "detect lag", "delivery", "lead time"):
        table.add_column(col)
    for r in rows.iter_rows(named=True):
        table.add_row(
            r["alert_id"], r["tag"], r["trend"], str(r["member_count"]),
            f"{r['crossed_at']:%m-%d %H:%M}", r["order_id"] or "-",
            f"{r['warehouse_id']} ({r['routed_by']})" if r["warehouse_id"] else "-",
            f"{r['quantity']:g} {r['unit']} {r['sku']}" if r["sku"] else "-", r["status"] or "-",
            _duration(r["detection_lag_s"]), _duration(r["delivery_s"]), _duration(r["lead_s"]),
        )  # fmt: skip
    out.print(table)
    lead = rows["lead_s"].drop_nulls()
    if lead.len():
        out.print(
            f"lead time, rule crossed (event time) -> order delivered: {lead.len()} order(s), "
            f"median {_duration(lead.median())}, max {_duration(lead.max())} "  # type: ignore[arg-type]
            f"(detection lag median {_duration(rows['detection_lag_s'].median())}, "  # type: ignore[arg-type]
            f"delivery median {_duration(rows['delivery_s'].median())})"  # type: ignore[arg-type]
        )


@alerts_app.command("run")
def run_cmd(
    at: Annotated[
        str, typer.Option(help="Event time to evaluate: ISO, 'now' or 'latest'.")
    ] = "now",
    since: Annotated[
        str | None, typer.Option(help="Replay: evaluate every --step-h from this time to --at.")
    ] = None,
    step_h: Annotated[
        float, typer.Option(help="Replay step in hours.", callback=common.positive)
    ] = 1.0,
    deliver: Annotated[bool, typer.Option("--deliver/--no-deliver")] = True,
    full: Annotated[
        bool, typer.Option("--full", help="Evaluate every cell, not only new.")
    ] = False,
    rules: RulesOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Evaluate the rules (once, or replayed over time), write alerts and orders, deliver."""
    from pipelines.alerts.config import load_config
    from pipelines.alerts.delivery import DeliveryReport, deliver_due
    from pipelines.alerts.runner import run_alerts

    try:
        config = load_config(rules)
        secrets = _secrets()
        with _store() as store:
            end = _parse_time(store, at)
            times = [end]
            if since is not None:
                start, step = _parse_time(store, since), timedelta(hours=step_h)
                times = [start + i * step for i in range(int((end - start) / step) + 1)]
            reports: list[RunReport] = []
            sent = DeliveryReport()
            for moment in times:
                reports.append(run_alerts(store, config, at=moment, incremental=not full))
                if deliver:
                    sent.add(deliver_due(store, config, secrets.lookup))
            touched = sorted({a for r in reports for a in (*r.opened, *r.updated, *r.closed)})
            rows = lead_times(store, touched)
    except FieldTraceError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    if as_json:
        out.print_json(json.dumps(rows.to_dicts(), default=str))
    else:
        _print_summary(reports, rows, sent)


@alerts_app.command("deliver")
def deliver_cmd(
    until_empty: Annotated[bool, typer.Option(help="Exit when nothing is pending.")] = True,
    rules: RulesOpt = None,
) -> None:
    """Drain the outbox to the warehouse webhooks (retries with backoff, then dead letters)."""
    from pipelines.alerts.config import load_config
    from pipelines.alerts.delivery import drain

    try:
        config = load_config(rules)
        secrets = _secrets()
        with _store() as store:
            report = drain(store, config, secrets.lookup, until_empty=until_empty)
    except FieldTraceError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    out.print(
        f"delivered {report.delivered}, failed attempts {report.failed} "
        f"(refused {report.refused}), dead-lettered {report.dead_lettered}"
    )


@alerts_app.command("dead-letters")
def dead_letters_cmd(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Orders whose delivery gave up after the attempt limit, with the last error."""
    from pipelines.alerts.delivery import dead_letters

    with _store() as store:
        rows = dead_letters(store)
    if as_json:
        out.print_json(json.dumps(rows.to_dicts(), default=str))
        return
    table = Table(title=f"Dead-lettered deliveries ({rows.height})")
    for col in ("order", "warehouse", "attempts", "dead since", "last error"):
        table.add_column(col)
    for r in rows.iter_rows(named=True):
        table.add_row(
            r["order_id"], r["warehouse_id"], str(r["attempts"]), f"{r['dead_at']:%Y-%m-%d %H:%M}",
            str(r["last_error"]),
        )  # fmt: skip
    out.print(table)


@alerts_app.command("redrive")
def redrive_cmd(
    order_ids: Annotated[
        list[str] | None, typer.Argument(help="Orders to re-drive (default: every dead letter).")
    ] = None,
    actor: Annotated[str, typer.Option(help="Who re-drives (audit log).")] = "cli",
) -> None:
    """Queue dead-lettered deliveries again with a fresh attempt budget (then `deliver`)."""
    from pipelines.alerts.delivery import redrive

    try:
        with _store() as store:
            done = redrive(store, order_ids or None, actor)
    except FieldTraceError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    out.print(f"re-driven {len(done)} order(s): {', '.join(done) or '-'}")


@alerts_app.command("list")
def list_cmd(
    status: Annotated[
        str, typer.Option(help="open, closed or all.", callback=common.one_of(*ALERT_LISTS))
    ] = "open",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Alerts with their orders and lead times."""
    from pipelines.alerts.delivery import DeliveryReport

    with common.open_store(read_only=True) as store:
        ids = store.query(
            "SELECT alert_id FROM cluster_alerts WHERE ? = 'all' OR status = ?", (status, status)
        )["alert_id"].to_list()
        rows = lead_times(store, ids)
    if as_json:
        out.print_json(json.dumps(rows.to_dicts(), default=str))
        return
    _print_summary([_empty_report()], rows, DeliveryReport())


def _empty_report() -> RunReport:
    from pipelines.alerts.runner import RunReport

    return RunReport("", datetime.now(UTC), "full", 0, {}, 0)


@alerts_app.command("export")
def export_cmd(
    out_path: Annotated[
        Path, typer.Option("--out", help="CSV file to write.", callback=common.writable_file)
    ],
    warehouse: Annotated[str | None, typer.Option(help="Only this warehouse's orders.")] = None,
    mark: Annotated[
        bool, typer.Option("--mark-sent", help="Mark exported open orders as sent (by CSV).")
    ] = False,
) -> None:
    """Orders as CSV for warehouses without a webhook (one row per order, with its alert)."""
    from pipelines.alerts.orders import mark_sent

    with _store() as store:
        frame = store.query(
            "SELECT o.order_id, o.status, o.warehouse_id, o.routed_by, o.sku, o.quantity, o.unit, "
            "o.created_at, o.sent_at, o.acknowledged_at, o.fulfilled_at, o.cancelled_at, "
            "a.alert_id, a.tag, a.member_count, a.centroid_lat, a.centroid_lon, a.crossed_at, "
            "a.first_seen, a.rule_version, a.geom_wkt, array_to_string(a.member_ticket_ids, ' ') "
            "AS member_ticket_ids FROM restock_orders o JOIN cluster_alerts a USING (alert_id) "
            "WHERE ? IS NULL OR o.warehouse_id = ? ORDER BY o.created_at, o.order_id",
            (warehouse, warehouse),
        )
        out_path.parent.mkdir(parents=True, exist_ok=True)
        frame.write_csv(out_path)
        marked = 0
        if mark:
            for order_id in frame.filter(pl.col("status") == ORDER_OPEN)["order_id"].to_list():
                mark_sent(store, order_id, "csv-export", channel=str(out_path))
                marked += 1
    out.print(f"wrote {frame.height} order(s) to {out_path}; marked sent: {marked}")


def _lifecycle(action: str, order_id: str, actor: str, **kw: Any) -> None:
    """One move of the order state machine (the same function the dashboard buttons call)."""
    from pipelines.alerts.orders import apply_action

    try:
        with _store() as store:
            status = apply_action(store, order_id, action, actor, **kw)
    except FieldTraceError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    out.print(f"order {order_id} {status} by {actor}")


@alerts_app.command("ack")
def ack_cmd(order_id: str, actor: Annotated[str, typer.Option()]) -> None:
    """The warehouse acknowledges a sent order."""
    from pipelines.alerts.orders import ACKNOWLEDGE

    _lifecycle(ACKNOWLEDGE, order_id, actor)


@alerts_app.command("fulfil")
def fulfil_cmd(order_id: str, actor: Annotated[str, typer.Option()]) -> None:
    """The warehouse fulfilled an acknowledged order."""
    from pipelines.alerts.orders import FULFIL

    _lifecycle(FULFIL, order_id, actor)


@alerts_app.command("cancel")
def cancel_cmd(
    order_id: str, actor: Annotated[str, typer.Option()], reason: Annotated[str, typer.Option()]
) -> None:
    """Cancel an order that is not fulfilled (an unsent one is never delivered)."""
    from pipelines.alerts.orders import CANCEL

    _lifecycle(CANCEL, order_id, actor, reason=reason)


@alerts_app.command("history")
def history_cmd(
    since: Annotated[str, typer.Option(help="First evaluation time: ISO or 'latest'.")],
    until: Annotated[str, typer.Option(help="Last evaluation time: ISO, 'now', 'latest'.")] = (
        "latest"
    ),
    step_h: Annotated[float, typer.Option(help="Hours between evaluation times.")] = 1.0,
    rules: RulesOpt = None,
    out_path: Annotated[
        Path | None, typer.Option("--out", help="Write the firing cells to this Parquet file.")
    ] = None,
    engine: common.EngineOpt = "local",
    scheduler: common.SchedulerOpt = common.DEFAULT_SCHEDULER,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Recompute which cells fired at every --step-h over a period (writes no alerts)."""
    from pipelines.alerts.config import load_config
    from pipelines.batch.clusters import cluster_history, eval_times
    from pipelines.batch.engine import runner

    mode = common.checked_engine(engine)
    if step_h <= 0:
        err.print(f"[red]error:[/] --step-h {step_h}: expected hours > 0")
        raise typer.Exit(2)
    try:
        config = load_config(rules)
        with _store() as store:
            start, end = _parse_time(store, since), _parse_time(store, until)
            times = eval_times(start, end, timedelta(hours=step_h))
            with runner(mode, scheduler) as batch:
                history = cluster_history(store, config, batch, times=times)
    except FieldTraceError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    firing = history.firing
    if out_path is not None:
        firing.write_parquet(out_path)
    report = {
        "eval_times": history.eval_times,
        "firing_rows": firing.height,
        "firing_cells": firing["cell"].n_unique() if firing.height else 0,
        "engine": mode,
        "seconds": round(history.seconds, 2),
    }
    if as_json:
        out.print_json(json.dumps(report))
    else:
        out.print(
            f"cluster history: {report['eval_times']} evaluation times, "
            f"{report['firing_rows']} firing cell-times over {report['firing_cells']} cells "
            f"({mode}, {report['seconds']} s)" + (f"; wrote {out_path}" if out_path else "")
        )
