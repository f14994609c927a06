"""DuckLake against the embedded file, and the team deployment under load.

``python -m bench.bench_lake [--fixes N] [--users 50] [--duration-s 40] [--think-s 5]``

1. The same synthetic store (``bench_replay.build``) on both backends, then, per backend:
   ingest throughput (a GPS CSV through ``ingest_file``), dispatch query p95 (``map_view``,
   all layers) and replay bundle p95 (``replay_bundle``); ratios lake / file.
2. ``serve --prod --workers 2`` on the lake while positions are written at 1,000/s by file
   ingest (one 1,000-row CSV per second, from another process), and ``--users`` logged-in
   users on the dispatch page: each logs in, then asks for the dispatch map (the page's
   main callback) every ``--think-s`` seconds (± 50 %), for ``--duration-s``. p50/p95,
   errors, achieved write rate.
3. The embedded dev server (``serve``, one process) under the same users, same run. No
   ingest runs beside it: the file admits one writing process and the server holds it.

Needs PostgreSQL on 127.0.0.1:5432 (trust; ``FIELDTRACE_BENCH_PG_USER``, default postgres).
Writes bench/results/lake.json.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl

from bench import bench_replay
from bench.common import show, write_results
from pipelines.ingest.machine import ingest_file
from pipelines.settings import load_settings
from pipelines.store import catalog
from pipelines.store.gateway import Store
from pipelines.store.location import LakeLocation, parse_location
from pipelines.users import add_user
from pipelines.views import TicketFilter
from pipelines.views.replay import replay_bundle

REPO = Path(__file__).resolve().parents[1]
PG_USER = os.environ.get("FIELDTRACE_BENCH_PG_USER", "postgres")
PASSWORD = "bench-password-1"


def p(samples: list[float], q: float) -> float:
    return round(float(np.percentile(samples, q)) * 1000, 1) if samples else float("nan")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _gps_csv(path: Path, n: int, tech_prefix: str, start_s: int = 0) -> Path:
    """``n`` clean fixes of 100 technicians, one a second each, walking ~1 m/s."""
    t0 = bench_replay.DAY0 + timedelta(days=40, seconds=start_s)
    i = np.arange(n)
    tech, step = i % 100, i // 100
    pl.DataFrame(
        {
            "technician_id": [f"{tech_prefix}{t}" for t in range(100)] * (n // 100)
            + [f"{tech_prefix}{t}" for t in range(n % 100)],
            "ts": pl.Series(step * 1_000_000 + int(t0.timestamp() * 1e6)).cast(
                pl.Datetime("us", "UTC")
            ),
            "lat": 30.25 + tech * 1e-3 + step * 1e-5,
            "lon": 120.15 + tech * 1e-3,
            "accuracy_m": 5.0,
        }
    ).write_csv(path)
    return path


def backend_figures(location: str, tmp: Path, ingest_rows: int) -> dict[str, Any]:
    """Ingest throughput, dispatch query p95 and replay bundle p95 on one store."""
    from dashboard.context import AppContext
    from dashboard.figures.maps import LAYERS, Basemap
    from dashboard.pages.dispatch import map_view

    settings = load_settings(
        **(
            {"store_url": location}
            if location.startswith("ducklake:")
            else {"store_path": location}
        ),
        basemap_style="white-bg",
    )
    path = _gps_csv(tmp / f"ingest-{abs(hash(location))}.csv", ingest_rows, "ING-")
    with Store(location) as store:
        t0 = time.perf_counter()
        result = ingest_file(store, "gps", path, settings)
        ingest_s = time.perf_counter() - t0
        nodes = bench_replay._arrivals(store, 60, 11)
        for ticket_id, ts, _, _ in nodes[:5]:
            replay_bundle(store, ticket_id, ts)
        replay = []
        for ticket_id, ts, _, _ in nodes:
            t = time.perf_counter()
            replay_bundle(store, ticket_id, ts)
            replay.append(time.perf_counter() - t)
    ctx = AppContext(settings)
    basemap = Basemap("white-bg")
    dispatch = []
    for i in range(17):
        t = time.perf_counter()
        map_view(ctx, TicketFilter(), set(LAYERS), basemap, 5.0)
        if i >= 2:  # two warm-ups
            dispatch.append(time.perf_counter() - t)
    ctx.store.close()
    return {
        "ingest_rows": result.rows_accepted,
        "ingest_s": round(ingest_s, 2),
        "ingest_rows_per_s": round(result.rows_read / ingest_s),
        "ingest_quarantined": result.rows_quarantined,
        "dispatch_p50_ms": p(dispatch, 50),
        "dispatch_p95_ms": p(dispatch, 95),
        "replay_p50_ms": p(replay, 50),
        "replay_p95_ms": p(replay, 95),
    }


_WRITER = """
import sys, time
from pathlib import Path
import polars as pl
from datetime import timedelta
from bench.bench_lake import _gps_csv
from pipelines.ingest.machine import ingest_file
from pipelines.settings import load_settings
from pipelines.store.gateway import Store
location, tmp, seconds = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
settings = load_settings()
written, t0, k = 0, time.monotonic(), 0
with Store(location) as store:
    while time.monotonic() - t0 < seconds:
        due = t0 + k
        if time.monotonic() < due:
            time.sleep(due - time.monotonic())
        path = _gps_csv(tmp / f"live-{k}.csv", 1000, "LIVE-", start_s=k * 10)
        written += ingest_file(store, "gps", path, settings).rows_accepted
        k += 1
print(written, round(time.monotonic() - t0, 2))
"""


def _users_file(root: Path, users: int) -> Path:
    path = root / "users.toml"
    for i in range(users):
        add_user(path, f"dispatch{i}", "dispatcher", PASSWORD)
    return path


def _map_body(at_s: int) -> dict[str, Any]:
    from dashboard import ids

    key = f"..{ids.DISPATCH_MAP}.figure...{ids.DISPATCH_NOTE}.children.."
    return {
        "output": key,
        "outputs": [
            {"id": ids.DISPATCH_MAP, "property": "figure"},
            {"id": ids.DISPATCH_NOTE, "property": "children"},
        ],
        "inputs": [
            {"id": ids.DISPATCH_REGION, "property": "value", "value": None},
            {"id": ids.DISPATCH_TAG, "property": "value", "value": None},
            {"id": ids.DISPATCH_STATUS, "property": "value", "value": None},
            {"id": ids.DISPATCH_HOURS, "property": "value", "value": 0},
            {"id": ids.DISPATCH_LAYERS, "property": "value", "value": ["tickets", "technicians"]},
            {"id": ids.DISPATCH_AT, "property": "value", "value": at_s},
            {"id": ids.DISPATCH_REFRESH, "property": "n_intervals", "value": 0},
        ],
        "state": [],
        "changedPropIds": [f"{ids.DISPATCH_REFRESH}.n_intervals"],
    }


def load(base: str, users: int, duration_s: float, think_s: float, at_s: int) -> dict[str, Any]:
    """``users`` logged-in users asking for the dispatch map every ~think_s, bounded in time."""
    body = _map_body(at_s)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + duration_s

    def user(i: int) -> None:
        rng = random.Random(i)
        with httpx.Client(base_url=base, timeout=30) as client:
            login = client.post(
                "/login", data={"username": f"dispatch{i}", "password": PASSWORD, "next": "/"}
            )
            if login.status_code != 302:
                with lock:
                    errors.append(f"login {login.status_code}")
                return
            time.sleep(rng.uniform(0, think_s))
            while time.monotonic() < stop_at:
                t = time.perf_counter()
                try:
                    answer = client.post("/_dash-update-component", json=body)
                    ok = answer.status_code == 200 and "dispatch-map" in answer.text
                    why = f"HTTP {answer.status_code}"
                except httpx.HTTPError as exc:
                    ok, why = False, type(exc).__name__
                elapsed = time.perf_counter() - t
                with lock:
                    if ok:
                        latencies.append(elapsed)
                    else:
                        errors.append(why)
                time.sleep(think_s * rng.uniform(0.5, 1.5))

    threads = [threading.Thread(target=user, args=(i,)) for i in range(users)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=duration_s + 120)
    wall = time.perf_counter() - t0
    return {
        "users": users,
        "requests": len(latencies) + len(errors),
        "errors": len(errors),
        "error_kinds": sorted(set(map(str, errors)))[:5],
        "p50_ms": p(latencies, 50),
        "p95_ms": p(latencies, 95),
        "max_ms": round(max(latencies) * 1000, 1) if latencies else None,
        "req_per_s": round(len(latencies) / wall, 2),
    }


def _serve(store: str, root: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "FIELDTRACE_USERS_FILE": str(root / "users.toml"),
        "FIELDTRACE_SECRET_KEY": "bench-secret-lake-0123456789abcdef-xyz",
        "FIELDTRACE_BASEMAP_STYLE": "white-bg",
        "FIELDTRACE_DATA_DIR": str(root),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "--store", store, "serve", "--port", str(port), *extra],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/login", timeout=5).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    raise RuntimeError(f"server on port {port} did not start")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fixes", type=int, default=1_000_000)
    parser.add_argument("--ingest-rows", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--duration-s", type=float, default=40.0)
    parser.add_argument("--think-s", type=float, default=5.0)
    args, _ = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        file_store = str(tmp / "bench.duckdb")
        lake_url = (
            f"ducklake:postgresql://{PG_USER}@127.0.0.1:5432/ft_bench_{os.getpid()}"
            f"?data={tmp / 'lake'}"
        )
        lake = parse_location(lake_url)
        assert isinstance(lake, LakeLocation)
        try:
            results = run(args, tmp, file_store, lake_url)
        finally:
            catalog.drop_database(lake)
            shutil.rmtree(tmp / "lake", ignore_errors=True)
    write_results("lake", results)


def run(args: argparse.Namespace, tmp: Path, file_store: str, lake_url: str) -> dict[str, Any]:
    builds = {}
    for name, location in (("file", file_store), ("lake", lake_url)):
        t0 = time.perf_counter()
        bench_replay.build(location, args.fixes)  # type: ignore[arg-type]
        builds[name] = round(time.perf_counter() - t0, 1)
    figures = {
        name: backend_figures(location, tmp, args.ingest_rows)
        for name, location in (("file", file_store), ("lake", lake_url))
    }
    ratios = {
        "ingest_throughput_file_over_lake": round(
            figures["file"]["ingest_rows_per_s"] / figures["lake"]["ingest_rows_per_s"], 2
        ),
        "dispatch_p95_lake_over_file": round(
            figures["lake"]["dispatch_p95_ms"] / figures["file"]["dispatch_p95_ms"], 2
        ),
        "replay_p95_lake_over_file": round(
            figures["lake"]["replay_p95_ms"] / figures["file"]["replay_p95_ms"], 2
        ),
    }
    _users_file(tmp, args.users)
    with Store(file_store, read_only=True) as store:
        at_s = int(store.scalar("SELECT max(ts) FROM gps_fixes").timestamp())

    shape = (args.users, args.duration_s, args.think_s)
    port = _free_port()
    server = _serve(lake_url, tmp, port, "--prod", "--workers", "2")
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, lake_url, str(tmp), str(args.duration_s + 5)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        time.sleep(3)
        lake_load = load(f"http://127.0.0.1:{port}", *shape, at_s)
        out, err = writer.communicate(timeout=args.duration_s + 300)
    finally:
        _stop(server)
        if writer.poll() is None:
            writer.kill()
    if writer.returncode != 0:
        raise RuntimeError(f"writer failed: {err.decode()[-2000:]}")
    written, writer_s = out.decode().strip().splitlines()[-1].split()
    lake_load["positions_written"] = int(written)
    lake_load["positions_per_s"] = round(int(written) / float(writer_s), 1)

    port = _free_port()
    server = _serve(file_store, tmp, port, "--no-live")
    try:
        file_load = load(f"http://127.0.0.1:{port}", *shape, at_s)
    finally:
        _stop(server)
    results = {
        "fixes": args.fixes,
        "build_s": builds,
        "backends": figures,
        "ratios": ratios,
        "load": {
            "think_s": args.think_s,
            "duration_s": args.duration_s,
            "lake_prod_2_workers_with_ingest": lake_load,
            "file_dev_server_no_ingest": file_load,
        },
        "targets": {"lake_load_p95_ms": 500, "errors": 0, "ratios_within": 2.0},
    }
    show(
        f"DuckLake vs the embedded file ({args.fixes:,} fixes)",
        [
            *(
                (
                    f"{k} ingest / dispatch p95 / replay p95",
                    f"{v['ingest_rows_per_s']:,}/s, {v['dispatch_p95_ms']} ms, "
                    f"{v['replay_p95_ms']} ms",
                    "",
                )
                for k, v in figures.items()
            ),
            *((k, str(v), "goal <= 2") for k, v in ratios.items()),
            (
                f"lake prod x2 + {lake_load['positions_per_s']}/s ingest, {args.users} users",
                f"p50 {lake_load['p50_ms']} / p95 {lake_load['p95_ms']} ms, "
                f"{lake_load['errors']} errors, {lake_load['req_per_s']} req/s",
                "p95 <= 500 ms, 0 errors",
            ),
            (
                f"file dev server, {args.users} users (no ingest possible)",
                f"p50 {file_load['p50_ms']} / p95 {file_load['p95_ms']} ms, "
                f"{file_load['errors']} errors, {file_load['req_per_s']} req/s",
                "",
            ),
        ],
    )
    return results


if __name__ == "__main__":
    main()
