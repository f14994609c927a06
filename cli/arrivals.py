"""``fieldtrace arrivals verify``: verdicts for every "arrived", with a rich summary."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cli import common
from pipelines.batch.engine import runner

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


def _iso(value: str | None, option: str) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        common.console.print(f"[red]error:[/] {option} {value!r} is not an ISO-8601 time")
        raise typer.Exit(2) from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@arrivals_app.command("verify")
def verify_cmd(
    since: Annotated[
        str | None,
        typer.Option(help="Only arrivals at or after this ISO time.", callback=common.iso_time),
    ] = None,
    until: Annotated[str | None, typer.Option(help="Only arrivals before this ISO time.")] = None,
    engine: common.EngineOpt = "local",
    scheduler: common.SchedulerOpt = common.DEFAULT_SCHEDULER,
) -> None:
    """Verify arrivals against GPS/UWB evidence and store verdicts in arrival_checks."""
    # imported here: the verdict machinery (numba, scipy) is not needed to start the CLI
    from pipelines.arrivals.runner import run_arrivals, summary
    from pipelines.batch.arrivals import verify_period

    s = common.settings()
    start, end = _iso(since, "--since"), _iso(until, "--until")
    mode = common.checked_engine(engine)
    with common.open_store(s) as store, _out.status("verifying arrivals"):
        if mode == "local" and end is None:
            run = run_arrivals(store, s, since=start)
        else:
            with runner(mode, scheduler) as batch:
                run = verify_period(store, s, batch, since=start, until=end, now=datetime.now(UTC))
    if run.checks.height == 0:
        _out.print("no arrivals to verify")
        return
    parts = summary(run.checks)
    stages = ", ".join(f"{name} {sec:.2f}s" for name, sec in run.stages.items())
    _out.print(
        f"verified {run.checks.height:,} arrivals in {run.seconds:.2f}s"
        + (f" ({stages})" if stages else "")
        + f"; rule {run.checks['rule_version'][0]}, radius {s.thresholds.arrival_radius_m} m"
    )
    if run.stops is not None:
        _out.print(
            f"window stops: {run.stops.kept:,} technician(s) kept from the last run (same "
            f"window fixes, same thresholds), {run.stops.detected:,} detected "
            f"({run.stops.detected_fixes:,} fixes)"
        )
    _out.print(_table("Verdicts by region", parts["by_region"]))
    _out.print(_table("Status lag of verified arrivals (s)", parts["lag"]))
    _out.print(_table("INCONCLUSIVE reasons", parts["inconclusive"]))
    _out.print(_table("Top technicians by rejected arrivals", parts["top_rejected"]))
