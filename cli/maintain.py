"""``fieldtrace maintain``: keep a DuckLake store compact (one job; never two at once)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from cli.common import console, open_store, out


def maintain(
    keep_snapshots_h: Annotated[
        float,
        typer.Option(help="Keep snapshots (time travel) younger than this many hours."),
    ] = 24.0,
    file_min_age_min: Annotated[
        float,
        typer.Option(
            help="Delete old and orphaned files only when older than this many minutes "
            "(longer than any write takes: a running write's files look orphaned)."
        ),
    ] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Merge small files, expire snapshots and delete orphans on a DuckLake store.

    Runs under a PostgreSQL advisory lock: a second `maintain` while one runs exits with
    status 75 and changes nothing. On the embedded DuckDB file there is nothing to do.
    """
    if keep_snapshots_h < 0 or file_min_age_min < 0:
        console.print(
            f"[red]error:[/] --keep-snapshots-h={keep_snapshots_h} and "
            f"--file-min-age-min={file_min_age_min} must be >= 0"
        )
        raise typer.Exit(2)
    now = datetime.now(UTC)
    with open_store() as store:
        if not store.is_lake:
            console.print(
                f"{store.location} is an embedded DuckDB file: nothing to maintain "
                "(ingest re-sorts it; DuckLake stores need `fieldtrace maintain`)."
            )
            return
        with store.try_writer_lock("maintain") as got:
            if not got:
                console.print(
                    "[yellow]another `fieldtrace maintain` is running on this lake; nothing done[/]"
                )
                raise typer.Exit(75)
            report = store.maintain(
                snapshots_before=now - timedelta(hours=keep_snapshots_h),
                files_before=now - timedelta(minutes=file_min_age_min),
            )
    seconds = round((datetime.now(UTC) - now).total_seconds(), 3)
    if as_json:
        out.print_json(json.dumps({**report, "seconds": seconds}))
    else:
        out.print(
            f"maintained {store.location}: data files {report['files_before']} -> "
            f"{report['files_after']} in {seconds} s"
        )
