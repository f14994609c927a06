"""Run every benchmark (``make bench``). Each writes bench/results/<name>.json."""

from __future__ import annotations

import importlib
import sys

BENCHES = (
    "bench.bench_ingest",
    "bench.bench_csv_gps",
    "bench.bench_arrivals",
    "bench.bench_clusters",
    "bench.bench_dashboard",
    "bench.bench_replay",
    "bench.bench_edge",
    "bench.bench_live",
)


def main() -> int:
    failed = []
    for name in BENCHES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            print(f"skip {name}: {exc}")
            continue
        print(f"== {name}")
        sys.argv = [name]
        try:
            module.main()
        except Exception as exc:
            print(f"{name} failed: {exc}")
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
