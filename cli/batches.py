"""``fieldtrace batches list|delete``: what was ingested, and taking one batch back out."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from cli.common import console, open_store, out, settings
from pipelines.ingest.batches import delete_batch, list_batches
from pipelines.ingest.kinds import KINDS

batches_app = typer.Typer(
    name="batches", help="Ingest batches: list, delete.", no_args_is_help=True
)


def _kind(value: str | None) -> str | None:
    if value is not None and value not in KINDS:
        raise typer.BadParameter(f"{value!r} is not a kind; expected one of {', '.join(KINDS)}")
    return value


@batches_app.command("list")
def list_cmd(
    kind: Annotated[str | None, typer.Option(help="Only this kind.", callback=_kind)] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many.")] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Ingest batches, newest first: file, counts, options."""
    with open_store(settings(), read_only=True) as store:
        frame = list_batches(store, kind=kind, limit=limit)
    if as_json:
        out.print_json(json.dumps(frame.to_dicts(), default=str))
        return
    table = Table(title="Ingest batches")
    cols = ("batch_id", "kind", "path", "rows_read", "rows_accepted", "rows_quarantined")
    for col in (*cols, "finished_at"):
        table.add_column(col)
    for row in frame.iter_rows(named=True):
        table.add_row(*(str(row[c]) for c in (*cols, "finished_at")))
    out.print(table)


@batches_app.command("delete")
def delete_cmd(
    batch_id: Annotated[str, typer.Argument(help="A batch id from `batches list`.")],
) -> None:
    """Delete one batch: its rows, its quarantine rows and its record, in one transaction."""
    with open_store(settings()) as store:
        counts = delete_batch(store, batch_id)
    console.print(
        f"deleted batch {batch_id}: {counts['rows']:,} rows, "
        f"{counts['quarantined']:,} quarantine rows"
    )
