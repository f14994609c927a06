"""One vocabulary: the schema refuses any word pipelines.vocabulary does not hold."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

from pipelines import vocabulary as v
from pipelines.store.gateway import Store

AT = datetime(2026, 10, 1, tzinfo=UTC)
CHECK = {
    "event_id": "E-1", "ticket_id": "T-1", "event_ts": AT, "verdict": "INCONCLUSIVE",
    "reason": "straddles_radius", "decided_by": "stop", "evidence": "{}",
    "rule_version": "arrival-v2", "computed_at": AT,
}  # fmt: skip
ALERT = {
    "alert_id": "A-1", "cluster_key": "k", "tag": "refrigerant_leak", "status": "open",
    "trend": "new", "member_count": 20, "member_cells": ["c"], "member_ticket_ids": ["t"],
    "explanation": "{}", "rule_version": "clusters-v1", "first_seen": AT, "last_updated": AT,
}  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "ft.duckdb")


def _insert(store: Store, table: str, row: dict[str, Any]) -> None:
    with store.transaction() as tx:
        tx.insert_frame(table, pl.DataFrame([row]))


@pytest.mark.parametrize(
    ("table", "base", "column", "word"),
    [
        ("arrival_checks", CHECK, "verdict", "VERIFIED_MAYBE"),
        ("arrival_checks", CHECK, "reason", "within_radius"),
        ("arrival_checks", CHECK, "decided_by", "gps"),
        ("cluster_alerts", ALERT, "status", "resolved"),
        ("cluster_alerts", ALERT, "trend", "rising"),
    ],
)
def test_a_word_outside_the_vocabulary_is_refused(
    store: Store, table: str, base: dict[str, Any], column: str, word: str
) -> None:
    _insert(store, table, base)  # the vocabulary's own words go in
    with pytest.raises(duckdb.ConstraintException, match="CHECK"):
        _insert(store, table, {**base, next(iter(base)): "other", column: word})
    assert store.count(table) == 1


def test_the_vocabulary_words_are_all_accepted(store: Store) -> None:
    for i, (reason, by) in enumerate(
        zip(v.VERDICT_REASONS, v.VERDICT_DECIDED_BY * 3, strict=False)
    ):
        _insert(store, "arrival_checks", {**CHECK, "event_id": f"E-{i}", "reason": reason,
                                          "decided_by": by})  # fmt: skip
    for i, (status, trend) in enumerate((s, t) for s in v.ALERT_STATUSES for t in v.ALERT_TRENDS):
        _insert(store, "cluster_alerts", {**ALERT, "alert_id": f"A-{i}", "status": status,
                                          "trend": trend})  # fmt: skip
    assert store.count("arrival_checks") == len(v.VERDICT_REASONS)
    assert store.count("cluster_alerts") == len(v.ALERT_STATUSES) * len(v.ALERT_TRENDS)
