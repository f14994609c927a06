"""The words of the arrival rule (``geofence.verdict``), without its machinery.

The store's vocabulary (``pipelines.vocabulary``) and the pages that read verdicts need these
names, not numpy, scipy or the compiled stop kernel; importing them from here keeps every
command that only touches the store quick to start.
"""

from __future__ import annotations

from typing import Final

import polars as pl

RULE_VERSION: Final = "arrival-v2"
TIERS: Final = ("AT_DOOR", "ON_SITE", "INCONCLUSIVE", "REJECTED")
# arrival-v1 spoke of VERIFIED (<= radius proven), which is AT_DOOR; REJECTED and
# INCONCLUSIVE keep their names. Stored v1 rows are mapped on read, never rewritten.
LEGACY_VERDICTS: Final = {"VERIFIED": "AT_DOOR"}
SPOOFS: Final = ("mock_location", "future_fix", "spoof_speed", "spoof_repeated_coords")
# Every ``reason`` an INCONCLUSIVE verdict can carry (a spoof rule's name, or why the evidence
# cannot place the technician) and every ``decided_by`` (the evidence a verdict rests on).
REASONS: Final = (
    "straddles_radius",
    "gps_blind_no_uwb",
    "no_fix_within_window",
    "poor_accuracy",
    *SPOOFS,
)
DECIDED_BY: Final = ("uwb", "gps_fix", "stop", "prior")


def read_verdict(verdict: pl.Expr) -> pl.Expr:
    """A stored verdict in today's tiers (``LEGACY_VERDICTS`` mapped, the rest as is)."""
    return verdict.replace(LEGACY_VERDICTS)
