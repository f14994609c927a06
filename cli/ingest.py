"""Data commands: ``ingest``, ``ingest-world``, ``generate`` and ``status``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from cli.common import (
    DEFAULT_SCHEDULER,
    EngineOpt,
    SchedulerOpt,
    checked_engine,
    console,
    open_store,
    out,
    positive,
    progress_bar,
    settings,
)
from pipelines.batch.engine import runner
from pipelines.batch.ingest import ingest_many
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
                f"[yellow]{escape(r.path)}[/] as {r.kind}: already ingested with these options "
                f"as {r.batch_id}; added 0 rows (--replace re-ingests)"
            )
            continue
        console.print(
            f"[green]{escape(r.path)}[/] as {r.kind}: read {r.rows_read:,} = accepted "
            f"{r.rows_accepted:,} + quarantined {r.rows_quarantined:,} ({r.seconds:.2f}s)"
            + (f" reasons: {r.reasons}" if r.reasons else "")
            + (f"; replaced {', '.join(r.replaced)}" if r.replaced else "")
        )
        for note in r.notes:
            console.print(f"  [yellow]note:[/] {escape(note)}")


def ingest_paths(
    store: Store,
    kind: str,
    paths: list[Path],
    s: Settings,
    opts: IngestOptions,
    quiet: bool = False,
    replace: bool = False,
) -> list[IngestResult]:
    """Ingest files one batch each, with a rich progress bar over files and stages."""
    from pipelines.ingest.machine import STAGES

    results: list[IngestResult] = []
    with progress_bar() as bar:
        task = bar.add_task(f"ingest {kind}", total=len(paths) * len(STAGES))
        for path in paths:
            done = 0

            def stage(msg: str, _p: Path = path) -> None:
                nonlocal done
                done += 1
                bar.update(task, advance=1, description=f"{kind} {_p.name}: {msg}")

            result = ingest_file(store, kind, path, s, opts, progress=stage, replace=replace)
            bar.update(task, advance=len(STAGES) - done)
            results.append(result)
    if not quiet:
        print_results(results)
    return results


TICKET_FEED_FORMATS = ("open311", "socrata")


def ingest_ticket_feeds(
    store: Store,
    paths: list[Path],
    s: Settings,
    opts: IngestOptions,
    quiet: bool = False,
    replace: bool = False,
) -> list[IngestResult]:
    """A 311 feed file holds tickets and their lifecycle: ingest both, tickets first."""
    from pipelines.ingest.sources.tickets import ingest_ticket_feed

    results: list[IngestResult] = []
    with progress_bar() as bar:
        task = bar.add_task("ingest 311 feed", total=len(paths))
        for path in paths:
            feed = ingest_ticket_feed(store, path, s, opts, replace=replace)
            results += [feed.tickets, feed.events]
            bar.update(task, advance=1)
    if not quiet:
        print_results(results)
    return results


def _known_kind(value: str) -> str:
    if value not in KINDS:
        raise typer.BadParameter(
            f"{value!r} is not a kind; expected one of {', '.join(sorted(KINDS))}"
        )
    return value


def ingest(
    kind: Annotated[
        str,
        typer.Argument(help=f"One of: {', '.join(sorted(KINDS))}", callback=_known_kind),
    ],
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Files to ingest, one batch each.", exists=True, dir_okay=False, readable=True
        ),
    ],
    fmt: Annotated[str | None, typer.Option("--format", help="Input format (see README).")] = None,
    datum: Annotated[str | None, typer.Option(help="Declared datum: WGS84, GCJ02, BD09.")] = None,
    tz: Annotated[str | None, typer.Option(help="Zone of naive times (IANA name).")] = None,
    columns: Annotated[str | None, typer.Option(help="canon=source,... column mapping.")] = None,
    assume_accuracy_m: Annotated[
        float | None,
        typer.Option(
            help="Accept fixes without accuracy, assuming this 1σ in metres (> 0). Reported "
            "accuracies are still checked."
        ),
    ] = None,
    device: Annotated[str | None, typer.Option(help="Device/technician id for the file.")] = None,
    site_file: Annotated[
        Path | None, typer.Option(help="UWB site file (YAML/JSON).", exists=True, dir_okay=False)
    ] = None,
    sample_rate_hz: Annotated[float | None, typer.Option(help="Vibration sample rate.")] = None,
    rpm: Annotated[float | None, typer.Option(help="Shaft speed for vibration series.")] = None,
    radius_m: Annotated[
        float | None, typer.Option(help="Outages: buffer radius of point features (m, > 0).")
    ] = None,
    encoding: Annotated[
        str | None, typer.Option(help="Text encoding of the file (default: UTF-8 or detected).")
    ] = None,
    delimiter: Annotated[
        str | None, typer.Option(help="Field delimiter of a delimited file (one character).")
    ] = None,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Swap the earlier batch(es) of the same file (its rows and quarantine rows) "
            "for this one, in one transaction.",
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print counts and reasons as JSON.")
    ] = False,
    engine: EngineOpt = "local",
    scheduler: SchedulerOpt = DEFAULT_SCHEDULER,
) -> None:
    """Validate and ingest files; rejected rows go to quarantine with a reason.

    With --engine dask (DuckLake stores only) the files are spread over Dask workers.
    """
    from pipelines.ingest.sources import formats_for

    s = settings()
    mode = checked_engine(engine)
    if fmt is not None and fmt not in formats_for(kind):
        raise typer.BadParameter(
            f"{fmt!r} is not a format of kind {kind}; expected one of "
            f"{', '.join(formats_for(kind))}",
            param_hint="--format",
        )
    extra = {
        k: v
        for k, v in {
            "device": device,
            "site_file": site_file,
            "sample_rate_hz": sample_rate_hz,
            "rpm": rpm,
            "radius_m": radius_m,
            "delimiter": "\t" if delimiter in ("tab", "\\t") else delimiter,
        }.items()
        if v is not None
    }
    opts = IngestOptions(  # range-checks every value before any file is read
        fmt=fmt,
        datum=datum,
        tz=tz,
        assume_accuracy_m=assume_accuracy_m,
        columns=_parse_columns(columns),
        extra=extra,
        encoding=encoding,
    )
    with open_store(s) as store:
        if kind == "tickets" and fmt in TICKET_FEED_FORMATS:
            results = ingest_ticket_feeds(store, paths, s, opts, quiet=as_json, replace=replace)
        elif mode == "dask":
            with runner(mode, scheduler) as batch:
                results = ingest_many(store, kind, paths, s, opts, batch)
            if not as_json:
                print_results(results)
        else:
            results = ingest_paths(store, kind, paths, s, opts, quiet=as_json, replace=replace)
    if as_json:
        out.print_json(json.dumps([r.as_dict() for r in results], default=str))


def status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Row counts, the last batches, and quarantine by reason."""
    from pipelines.store import queries

    with open_store(read_only=True) as store:
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
    scale: Annotated[
        float, typer.Option(help="1.0 ≈ 150 technicians, 5,000 tickets.", callback=positive)
    ] = 1.0,
    days: Annotated[int, typer.Option(min=1, max=366, help="Days of operations.")] = 30,
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
    world: Annotated[
        Path | None,
        typer.Argument(help="Folder written by `generate`.", exists=True, file_okay=False),
    ] = None,
) -> None:
    """Ingest every file of a generated world (re-running adds nothing)."""
    s = settings()
    target = world or s.data_dir / "demo"
    if not target.is_dir():
        raise typer.BadParameter(f"{target} is not a folder; run `fieldtrace generate` first")
    ingest_world(target, s)
