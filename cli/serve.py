"""``fieldtrace serve`` and ``fieldtrace demo``: the dashboard, and the demo world end to end."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli import ingest as data_cli
from cli.common import console, open_store, positive, settings
from pipelines.settings import Settings

if TYPE_CHECKING:
    from pipelines.live.simulate import SimulateOptions


def _serve(
    s: Settings,
    host: str,
    port: int,
    *,
    debug: bool,
    prod: bool,
    workers: int,
    live: bool = True,
    replay: SimulateOptions | None = None,
    receivers: bool = True,
) -> None:
    if prod:
        from dashboard.serving import multi_worker_refusal, serve_prod

        refusal = multi_worker_refusal(s, workers)
        if refusal is not None:
            console.print(f"[red]error:[/] {refusal}")
            raise typer.Exit(2)
        console.print(f"[bold green]FieldTrace[/] gunicorn x{workers} on http://{host}:{port}")
        if live:
            console.print(
                "live ingest is not started under gunicorn: run `python -m pipelines.live "
                "receivers` and one `python -m pipelines.live writer` beside it"
            )
        serve_prod(s, workers=workers, bind=f"{host}:{port}")
        return
    from dashboard import create_app
    from pipelines.errors import FieldTraceError

    try:
        dash_app = create_app(s)
    except FieldTraceError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    with live_context(s, live=live, replay=replay, receivers=receivers):
        console.print(
            f"[bold green]FieldTrace[/] serving {s.store_location} on http://{host}:{port}"
        )
        dash_app.run(host=host, port=port, debug=debug, use_reloader=False)


@contextmanager
def live_context(
    s: Settings, *, live: bool, replay: SimulateOptions | None = None, receivers: bool = True
) -> Iterator[None]:
    """The live parts beside the dashboard (one process holds the embedded store): the
    configured NATS or a local child, the receivers, the writer, and optionally a replay."""
    if not live:
        yield
        return
    import signal
    import sys

    from pipelines.live.runtime import live_services

    # SIGTERM unwinds like Ctrl-C, so the live parts stop and a local nats-server child ends.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with live_services(s, receivers=receivers) as running:
        console.print(
            f"live: bus {s.bus_url}, OsmAnd on :{s.osmand_port}, "
            f"CloudEvents on :{s.events_port}/api/v1/events, MQTT {s.mqtt_url}"
        )
        if replay is not None:
            _start_replay(s, replay)
        yield
        if running.errors:
            console.print(f"[red]live parts stopped with errors:[/] {running.errors}")


def _start_replay(s: Settings, opts: SimulateOptions) -> None:
    import threading

    from pipelines.live.simulate import simulate

    def run() -> None:
        counts = simulate(s, s.data_dir / "demo", opts)
        console.print(f"simulator finished: {dict(counts)}")

    threading.Thread(target=run, name="fieldtrace-simulator", daemon=True).start()
    console.print(
        f"simulator: replaying {opts.hours:g} h of the demo world at {opts.speed:g}x, "
        "through the receivers"
    )


def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port.")] = 8050,
    debug: Annotated[bool, typer.Option(help="Dash debug mode.")] = False,
    prod: Annotated[bool, typer.Option("--prod", help="Serve through gunicorn.")] = False,
    workers: Annotated[
        int | None,
        typer.Option(help="gunicorn workers with --prod (default: 2 on DuckLake, 1 on a file)."),
    ] = None,
    live: Annotated[
        bool, typer.Option("--live/--no-live", help="Run the live writer (and receivers).")
    ] = True,
    receivers: Annotated[
        bool,
        typer.Option(
            "--receivers/--no-receivers",
            help="Run the receivers here too (else `python -m pipelines.live receivers`).",
        ),
    ] = True,
) -> None:
    """Serve the dashboard with live ingest (see docs/SERVING.md and docs/EVENTS.md).

    Several --prod workers need a DuckLake store (docs/SERVING.md)."""
    s = settings()
    if workers is None:
        workers = 2 if s.store_url else 1
    if workers < 1:
        console.print(f"[red]error:[/] --workers {workers}: at least 1 is needed")
        raise typer.Exit(2)
    _serve(s, host, port, debug=debug, prod=prod, workers=workers, live=live, receivers=receivers)


def prepare_demo(s: Settings, *, seed: int, scale: float) -> None:
    """Generate (once), ingest (idempotent), verify arrivals, evaluate alerts, create users."""
    from cli.users import demo as demo_users

    world: Path = s.data_dir / "demo"
    if not (world / "manifest.json").exists():
        data_cli.generate(out_dir=world, seed=seed, scale=scale, days=30)
    data_cli.ingest_world(world, s)
    for step in DEMO_STEPS:
        step(s)
    with open_store(s) as store:
        busiest = store.scalar(
            "SELECT warehouse_id FROM restock_orders GROUP BY warehouse_id "
            "ORDER BY count(*) DESC, warehouse_id LIMIT 1"
        )
    demo_users(warehouse=busiest)


def demo(
    seed: Annotated[int, typer.Option(help="Random seed of the demo world.")] = 7,
    scale: Annotated[
        float, typer.Option(help="World size (1.0 ≈ 150 technicians).", callback=positive)
    ] = 1.0,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8050,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Prepare only.")] = False,
    speed: Annotated[
        float, typer.Option(help="Live replay speed (x real time).", callback=positive)
    ] = 30.0,
    replay_hours: Annotated[
        float, typer.Option(help="Hours of the world replayed live.", callback=positive)
    ] = 2.0,
    live: Annotated[bool, typer.Option("--live/--no-live", help="Replay live.")] = True,
) -> None:
    """Generate the demo world, ingest it through the validated path, and serve it; then
    replay its planted-cluster hours live (shifted to now) through the real receivers."""
    s = settings()
    prepare_demo(s, seed=seed, scale=scale)
    if no_serve:
        return
    replay = demo_replay(s, hours=replay_hours, speed=speed) if live else None
    _serve(s, host, port, debug=False, prod=False, workers=1, live=live, replay=replay)


def demo_replay(s: Settings, *, hours: float, speed: float) -> SimulateOptions:
    """The demo's live replay: the hours before the planted cluster's window ends, moved to
    end now; ids get a suffix so they are new tickets, not duplicates of the ingested ones."""
    import json

    from pipelines.live.simulate import SimulateOptions

    manifest = json.loads((s.data_dir / "demo" / "manifest.json").read_text())
    end = datetime.fromisoformat(manifest["planted"]["cluster"]["window_end"])
    return SimulateOptions(
        start=end - timedelta(hours=hours),
        hours=hours,
        speed=speed,
        shift_to_now=True,
        id_suffix=f"-L{datetime.now(UTC):%m%d%H%M}",
    )


def demo_alerts(s: Settings, *, step_h: float = 2.0) -> None:
    """Replay the demo month's alert evaluation and deliver to the reference warehouse receiver.

    The receiver (a real HTTP server on 127.0.0.1:8765, where the demo warehouses' webhooks
    point) verifies signatures and logs to data/warehouse_inbox.jsonl. Re-running is a no-op.
    """
    from cli.alerts import run_cmd
    from pipelines.alerts.receiver import WarehouseReceiver
    from pipelines.credentials import WEBHOOK_SECRETS_FILE, WebhookSecrets, ensure_webhook_secrets

    with open_store(s) as store:
        if store.count("cluster_alerts") or not store.count("tickets"):
            return
        first = store.scalar("SELECT min(created_ts) FROM tickets")
        hooked = store.query("SELECT warehouse_id FROM warehouses WHERE webhook_url IS NOT NULL")
    since = (first + timedelta(hours=72)).isoformat()
    # the demo's receiver and deliverer share random per-warehouse secrets kept in data_dir
    secrets_file = s.webhook_secrets_file or s.data_dir / WEBHOOK_SECRETS_FILE
    ensure_webhook_secrets(secrets_file, hooked["warehouse_id"].to_list())
    with WarehouseReceiver(
        WebhookSecrets(s).lookup, port=8765, log_path=s.data_dir / "warehouse_inbox.jsonl"
    ):
        run_cmd(
            at="latest",
            since=since,
            step_h=step_h,
            deliver=True,
            full=False,
            rules=None,
            as_json=False,
        )


def demo_arrivals(s: Settings) -> None:
    """Verify every demo arrival (idempotent: verdicts are replaced, not added)."""
    from cli.arrivals import verify_cmd
    from pipelines.arrivals.runner import label_from_manifest

    verify_cmd(since=None)
    manifest = s.data_dir / "demo" / "manifest.json"
    if manifest.is_file():  # the generator's truth labels the reliability plot's outcomes
        with open_store(s) as store:
            n = label_from_manifest(store, manifest)
        console.print(f"labelled {n:,} arrivals with the generator's truth")


# Analysis steps `fieldtrace demo` runs after ingest, in order (arrivals, then alerts).
DEMO_STEPS: list[Callable[[Settings], None]] = [demo_arrivals, demo_alerts]
