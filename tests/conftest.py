"""Shared fixtures: real data (skips cleanly when absent) and browser options."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
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
