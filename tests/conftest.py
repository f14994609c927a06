"""Shared fixtures: real data (skips cleanly when absent) and browser options."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

REPO_ROOT = Path(__file__).resolve().parents[1]

# Service fixtures (one module per service), shared by every test package: real services
# (NATS JetStream, Mosquitto, PostgreSQL), the machine's when they answer, else throwaway.
pytest_plugins = [
    "tests.fixtures.nats",
    "tests.fixtures.mqtt",
    "tests.fixtures.postgres",
    "tests.fixtures.store",
]

# Property-test profiles: `default` keeps `make test` quick (about 1,500 mutated rows per
# source); `pytest --hypothesis-profile=thorough tests/pipelines/test_source_properties.py`
# runs more than 10,000 mutated rows per source.
hypothesis_settings.register_profile(
    "default", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
hypothesis_settings.register_profile(
    "thorough", max_examples=260, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
hypothesis_settings.load_profile("default")
REALDATA_DIR = Path(os.environ.get("FIELDTRACE_REALDATA", REPO_ROOT.parent / "shared" / "realdata"))


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The folder of real third-party datasets; skips the test when it is absent."""
    if not REALDATA_DIR.is_dir():
        pytest.skip(f"real data folder {REALDATA_DIR} is absent")
    return REALDATA_DIR


def pytest_setup_options():  # type: ignore[no-untyped-def]
    """Chrome options for dash.testing's dash_duo: Debian chromium, headless, offline."""
    from selenium.webdriver.chrome.options import Options

    options = Options()
    options.binary_location = os.environ.get("FIELDTRACE_CHROMIUM", "/usr/bin/chromium")
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    return options


# -- the demo world, built once per session through the real ingest path -------------------
DEMO_SEED = 7
DEMO_SCALE = 0.05


def build_demo(root: Path, *, seed: int, scale: float) -> tuple[object, dict[str, object]]:
    """Generate a seeded world, ingest it, verify arrivals; returns (settings, manifest)."""
    import json

    from cli.ingest import ingest_world
    from pipelines.arrivals.runner import label_from_manifest, run_arrivals
    from pipelines.generate import generate_world
    from pipelines.settings import load_settings
    from pipelines.store.gateway import Store

    settings = load_settings(
        store_path=root / "fieldtrace.duckdb",
        data_dir=root,
        users_file=root / "users.toml",
        basemap_style="white-bg",
        auth_mode="open",
    )
    generate_world(root / "demo", seed=seed, scale=scale)
    ingest_world(root / "demo", settings)
    with Store(settings.store_path) as store:
        run_arrivals(store, settings)
        label_from_manifest(store, root / "demo" / "manifest.json")
    manifest = json.loads((root / "demo" / "manifest.json").read_text())
    return settings, manifest


@pytest.fixture(scope="session")
def demo_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, dict[str, object]]:
    """One DuckDB file built from the demo generator with a fixed seed (read-mostly)."""
    return build_demo(tmp_path_factory.mktemp("demo"), seed=DEMO_SEED, scale=DEMO_SCALE)
