"""Data commands: ``ingest``, ``ingest-world``, ``generate`` and ``status``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.common import console, open_store, out, progress_bar, settings
from pipelines.errors import FieldTraceError
from pipelines.ingest.contract import IngestOptions
from pipelines.ingest.kinds import KINDS
from pipelines.ingest.machine import IngestResult, ingest_file
from pipelines.settings import Settings
from pipelines.store.gateway import Store


def _parse_columns(spec: str | None) -> dict[str, str]:
    if not spec:
        return {}
    pairs = {}
    for part in spec.split(","):
        if "=" not in part:
            raise typer.BadParameter(f"--columns entry {part!r} is not canon=source")
        canon, src = part.split("=", 1)
        pairs[canon.strip()] = src.strip()
    return pairs


def print_results(results: list[IngestResult]) -> None:
    """One line per batch: read = accepted + quarantined, and why rows were quarantined."""
    for r in results:
        if r.skipped:
            console.print(
                f"[yellow]{r.path}[/] as {r.kind}: already ingested as {r.batch_id}; added 0 rows"
            )
            continue
        console.print(
            f"[green]{r.path}[/] as {r.kind}: read {r.rows_read:,} = accepted "
            f"{r.rows_accepted:,} + quarantined {r.rows_quarantined:,} ({r.seconds:.2f}s)"
            + (f" reasons: {r.reasons}" if r.reasons else "")
        )


def ingest_paths(
    store: Store,
    kind: str,
    paths: list[Path],
    s: Settings,
    opts: IngestOptions,
    quiet: bool = False,
) -> list[IngestResult]:
    """Ingest files one batch each, with a rich progress bar over files and stages."""
    results: list[IngestResult] = []
    with progress_bar() as bar:
        task = bar.add_task(f"ingest {kind}", total=len(paths) * 6)
        for path in paths:
            done = 0

            def stage(msg: str, _p: Path = path) -> None:
                nonlocal done
                done += 1
                bar.update(task, advance=1, description=f"{kind} {_p.name}: {msg}")

            result = ingest_file(store, kind, path, s, opts, progress=stage)
            bar.update(task, advance=6 - done)
            results.append(result)
    if not quiet:
        print_results(results)
    return results


TICKET_FEED_FORMATS = ("open311", "socrata")


def ingest_ticket_feeds(
    store: Store, paths: list[Path], s: Settings, opts: IngestOptions, quiet: bool = False
) -> list[IngestResult]:
    """A 311 feed file holds tickets and their lifecycle: ingest both, tickets first."""
    from pipelines.ingest.sources.tickets import ingest_ticket_feed

    results: list[IngestResult] = []
    with progress_bar() as bar:
        task = bar.add_task("ingest 311 feed", total=len(paths))
        for path in paths:
            feed = ingest_ticket_feed(store, path, s, opts)
            results += [feed.tickets, feed.events]
            bar.update(task, advance=1)
    if not quiet:
        print_results(results)
    return results


def ingest(
    kind: Annotated[str, typer.Argument(help=f"One of: {', '.join(sorted(KINDS))}")],
    paths: Annotated[list[Path], typer.Argument(help="Files to ingest, one batch each.")],
    fmt: Annotated[str | None, typer.Option("--format", help="Input format (see README).")] = None,
    datum: Annotated[str | None, typer.Option(help="Declared datum: WGS84, GCJ02, BD09.")] = None,
    tz: Annotated[str | None, typer.Option(help="Zone of naive times (IANA name).")] = None,
    columns: Annotated[str | None, typer.Option(help="canon=source,... column mapping.")] = None,
    assume_accuracy_m: Annotated[
        float | None,
        typer.Option(help="Accept fixes without accuracy, assuming this 1σ in metres."),
    ] = None,
    device: Annotated[str | None, typer.Option(help="Device/technician id for the file.")] = None,
    site_file: Annotated[Path | None, typer.Option(help="UWB site file (YAML/JSON).")] = None,
    sample_rate_hz: Annotated[float | None, typer.Option(help="Vibration sample rate.")] = None,
    rpm: Annotated[float | None, typer.Option(help="Shaft speed for vibration series.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print counts and reasons as JSON.")
    ] = False,
) -> None:
    """Validate and ingest files; rejected rows go to quarantine with a reason."""
    s = settings()
    extra = {
        k: v
        for k, v in {
            "device": device,
            "site_file": site_file,
            "sample_rate_hz": sample_rate_hz,
            "rpm": rpm,
        }.items()
        if v is not None
    }
    opts = IngestOptions(
        fmt=fmt,
        datum=datum,
        tz=tz,
        assume_accuracy_m=assume_accuracy_m,
        columns=_parse_columns(columns),
        extra=extra,
    )
    try:
        with open_store(s) as store:
            if kind == "tickets" and fmt in TICKET_FEED_FORMATS:
                results = ingest_ticket_feeds(store, paths, s, opts, quiet=as_json)
            else:
                results = ingest_paths(store, kind, paths, s, opts, quiet=as_json)
    except FieldTraceError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    if as_json:
        out.print_json(json.dumps([r.as_dict() for r in results]))


def status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Row counts, the last batches, and quarantine by reason."""
    from pipelines.store import queries

    with open_store(read_only=False) as store:
        counts = store.table_counts()
        batches = queries.last_batches(store, limit=10)
        reasons = queries.quarantine_by_reason(store)
    if as_json:
        out.print_json(
            json.dumps(
                {"counts": counts, "batches": batches.to_dicts(), "quarantine": reasons.to_dicts()},
                default=str,
            )
        )
        return
    t = Table(title="Store contents")
    t.add_column("table")
    t.add_column("rows", justify="right")
    for name, n in counts.items():
        t.add_row(name, f"{n:,}")
    out.print(t)
    b = Table(title="Last ingest batches")
    for col in ("kind", "path", "rows_read", "rows_accepted", "rows_quarantined", "finished_at"):
        b.add_column(col)
    for row in batches.iter_rows(named=True):
        b.add_row(
            *(
                str(row[c])
                for c in (
                    "kind",
                    "path",
                    "rows_read",
                    "rows_accepted",
                    "rows_quarantined",
                    "finished_at",
                )
            )
        )
    out.print(b)
    q = Table(title="Quarantine by reason")
    for col in ("kind", "rule", "rows"):
        q.add_column(col)
    for row in reasons.iter_rows(named=True):
        q.add_row(row["kind"], row["rule"], f"{row['rows']:,}")
    out.print(q)


def generate(
    out_dir: Annotated[Path | None, typer.Option("--out", help="Output folder.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same world).")] = 7,
    scale: Annotated[float, typer.Option(help="1.0 ≈ 150 technicians, 5,000 tickets.")] = 1.0,
    days: Annotated[int, typer.Option(help="Days of operations.")] = 30,
) -> None:
    """Generate the demo world (files the ingest path reads, plus manifest.json)."""
    from pipelines.generate import generate_world

    s = settings()
    target = out_dir or s.data_dir / "demo"
    with progress_bar() as bar:
        task = bar.add_task("generate", total=100)

        def step(msg: str, frac: float) -> None:
            bar.update(task, completed=frac * 100, description=f"generate: {msg}")

        manifest = generate_world(target, seed=seed, scale=scale, days=days, progress=step)
        bar.update(task, completed=100)
    console.print(
        f"[green]demo world[/] written to {target} (seed {seed}, scale {scale}): "
        f"{json.dumps(manifest.counts)}"
    )


def ingest_world(world: Path, s: Settings) -> list[IngestResult]:
    """Ingest a generated world's files in dependency order, then restore sort order."""
    from pipelines.generate import INGEST_ORDER

    results: list[IngestResult] = []
    with open_store(s) as store:
        for kind, pattern in INGEST_ORDER:
            paths = sorted(world.glob(pattern))
            if paths:
                results += ingest_paths(store, kind, paths, s, IngestOptions(), quiet=True)
        with console.status("sorting tables for window reads"):
            store.optimize()
    for r in results:
        console.print(
            f"{r.kind:>13} {Path(r.path).name:<22} {r.rows_read:>10,} read "
            f"{r.rows_accepted:>10,} ok {r.rows_quarantined:>5,} quarantined"
            + (" (already)" if r.skipped else "")
        )
    return results


def ingest_world_cmd(
    world: Annotated[Path | None, typer.Argument(help="Folder written by `generate`.")] = None,
) -> None:
    """Ingest every file of a generated world (re-running adds nothing)."""
    s = settings()
    ingest_world(world or s.data_dir / "demo", s)
