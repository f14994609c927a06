"""``fieldtrace arrivals verify``: verdicts for every "arrived", with a rich summary."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cli import common
from pipelines.arrivals.runner import run_arrivals, summary

arrivals_app = typer.Typer(name="arrivals", help="Arrival verification.", no_args_is_help=True)
_out = Console()


def _table(title: str, frame: object) -> Table:
    import polars as pl

    assert isinstance(frame, pl.DataFrame)
    table = Table(title=title)
    for col in frame.columns:
        table.add_column(col, justify="right" if frame.schema[col].is_numeric() else "left")
    for row in frame.iter_rows():
        table.add_row(*(f"{v:,.0f}" if isinstance(v, float) else str(v) for v in row))
    return table


@arrivals_app.command("verify")
def verify_cmd(
    since: Annotated[
        str | None,
        typer.Option(help="Only arrivals at or after this ISO time.", callback=common.iso_time),
    ] = None,
) -> None:
    """Verify arrivals against GPS/UWB evidence and store verdicts in arrival_checks."""
    s = common.settings()
    start = None
    if since:
        start = datetime.fromisoformat(since)
        start = start if start.tzinfo else start.replace(tzinfo=UTC)
    with common.open_store(s) as store, _out.status("verifying arrivals"):
        run = run_arrivals(store, s, since=start)
    if run.checks.height == 0:
        _out.print("no arrivals to verify")
        return
    parts = summary(run.checks)
    _out.print(
        f"verified {run.checks.height:,} arrivals in {run.seconds:.1f}s "
        f"(rule {run.checks['rule_version'][0]}, radius {s.thresholds.arrival_radius_m} m)"
    )
    _out.print(_table("Verdicts by region", parts["by_region"]))
    _out.print(_table("Status lag of verified arrivals (s)", parts["lag"]))
    _out.print(_table("INCONCLUSIVE reasons", parts["inconclusive"]))
    _out.print(_table("Top technicians by rejected arrivals", parts["top_rejected"]))
