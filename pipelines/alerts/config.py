"""Alert configuration: cluster rules, the restock map and the delivery retry policy.

One TOML document (``DEFAULT_RULES_TOML`` below, or a file given with ``--rules``) is parsed
into ``AlertConfig``. Everything is validated at load time: a cluster or restock rule naming a
tag that is not in ``tags`` fails here with the rule index and the known tags, not when the
first ticket arrives. Webhook secrets never live here (a ``[webhooks]`` table is refused):
they come per warehouse from the settings, the environment or a secret file
(``pipelines.credentials``).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from geofence.clusters import ClusterRule, ClusterRuleError, load_rules
from geofence.restock import RestockRule, RestockRuleError
from pipelines.errors import FieldTraceError

DEFAULT_RULES_TOML = """
version = "2026.10-1"
history_days = 28          # baseline history before each window
steady_band = 0.1          # relative change below which an alert is "steady" (no top-up)
tags = ["refrigerant_leak", "compressor_fault", "thermostat", "wifi_drop", "no_power",
        "water_leak", "noise_vibration"]

[[cluster_rules]]
tag = "refrigerant_leak"
more_than = 19
window_h = 72
resolution = 7
k_ring = 1
fire_on = "rule"

[[cluster_rules]]
tag = "compressor_fault"
more_than = 29
window_h = 72
resolution = 7
k_ring = 1
fire_on = "both"           # over the threshold AND improbable against the cell's baseline
p_value_max = 0.001

[[cluster_rules]]
tag = "water_leak"
more_than = 14
window_h = 48
resolution = 7
k_ring = 1
fire_on = "rule"

[[restock]]
tag = "refrigerant_leak"
sku = "R32"
usage_per_ticket = 1.2
unit = "kg"

[[restock]]
tag = "compressor_fault"
sku = "CMP-ROTARY-2HP"
usage_per_ticket = 0.25    # one in four compressor faults needs a new compressor
unit = "piece"
pack_size = 1.0

[[restock]]
tag = "water_leak"
sku = "DRAIN-PUMP-KIT"
usage_per_ticket = 0.5
unit = "kit"
pack_size = 1.0

[delivery]
base_backoff_s = 5.0       # first retry after 2.5-5 s, doubling, equal jitter
max_backoff_s = 1800.0
timeout_s = 10.0           # first attempt; doubles per failed attempt up to max_timeout_s
max_timeout_s = 120.0
max_attempts = 12          # then the order is dead-lettered (`fieldtrace alerts redrive`)
source = "urn:fieldtrace:alerts"
"""


class AlertConfigError(FieldTraceError, ValueError):
    """The alert configuration (rules TOML) is invalid."""


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    base_backoff_s: float = 5.0
    max_backoff_s: float = 1800.0
    timeout_s: float = 10.0
    max_timeout_s: float = 120.0
    max_attempts: int = 12
    source: str = "urn:fieldtrace:alerts"

    def timeout_for(self, attempts: int) -> float:
        """Seconds to wait for attempt ``attempts + 1``: doubling, so a receiver slower than
        the first timeout is eventually heard (its 2xx ends the resends)."""
        return min(self.max_timeout_s, self.timeout_s * 2.0 ** min(attempts, 30))


@dataclass(frozen=True, slots=True)
class AlertConfig:
    version: str
    tags: frozenset[str]
    rules: tuple[ClusterRule, ...]
    restock: Mapping[str, RestockRule]
    history: timedelta = timedelta(days=28)
    steady_band: float = 0.1
    delivery: DeliveryPolicy = field(default_factory=DeliveryPolicy)


def _table(raw: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise AlertConfigError(f"{where}: [{key}] is {type(value).__name__}; expected a table")
    return value


def parse_config(raw: Mapping[str, Any], *, where: str = "rules") -> AlertConfig:
    """Validate a parsed TOML mapping into an ``AlertConfig``."""
    tags = raw.get("tags")
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        raise AlertConfigError(f"{where}: tags={tags!r}; expected a list of non-empty strings")
    version = str(raw.get("version", ""))
    if not version:
        raise AlertConfigError(f"{where}: version is missing; every alert stores it")
    known = set(tags)
    rule_maps = [{"version": version, **r} for r in raw.get("cluster_rules", [])]
    try:
        rules = load_rules(rule_maps, known)
    except ClusterRuleError as exc:
        raise AlertConfigError(f"{where}: {exc}") from exc
    restock: dict[str, RestockRule] = {}
    for index, item in enumerate(raw.get("restock", [])):
        tag = item.get("tag")
        if tag not in known:
            raise AlertConfigError(
                f"{where}: restock #{index}: tag={tag!r} is not a known tag; "
                f"known tags are {sorted(known)}"
            )
        if tag in restock:
            raise AlertConfigError(f"{where}: restock #{index}: tag={tag!r} is mapped twice")
        try:
            restock[tag] = RestockRule(**item)
        except (RestockRuleError, TypeError) as exc:
            raise AlertConfigError(f"{where}: restock #{index}: {exc}") from exc
    delivery = _table(raw, "delivery", where)
    if "webhooks" in raw:
        raise AlertConfigError(
            f"{where}: [webhooks] is not read any more: webhook secrets never live in rules; "
            "set FIELDTRACE_WEBHOOK_SECRET_<WAREHOUSE>, settings webhook_secrets or "
            "[webhook_secrets] in data/webhook_secrets.toml (mode 0600)"
        )
    try:
        policy = DeliveryPolicy(**delivery)
    except TypeError as exc:
        raise AlertConfigError(f"{where}: [delivery]: {exc}") from exc
    if not 0 < policy.base_backoff_s <= policy.max_backoff_s:
        raise AlertConfigError(
            f"{where}: [delivery] base_backoff_s={policy.base_backoff_s} must be > 0 and "
            f"<= max_backoff_s={policy.max_backoff_s}"
        )
    if not 0 < policy.timeout_s <= policy.max_timeout_s:
        raise AlertConfigError(
            f"{where}: [delivery] timeout_s={policy.timeout_s} must be > 0 and "
            f"<= max_timeout_s={policy.max_timeout_s}"
        )
    if not isinstance(policy.max_attempts, int) or policy.max_attempts < 1:
        raise AlertConfigError(
            f"{where}: [delivery] max_attempts={policy.max_attempts!r}; expected an integer >= 1"
        )
    history_days = raw.get("history_days", 28)
    if not isinstance(history_days, int | float) or history_days <= 0:
        raise AlertConfigError(f"{where}: history_days={history_days!r}; expected days > 0")
    return AlertConfig(
        version=version,
        tags=frozenset(known),
        rules=tuple(rules),
        restock=restock,
        history=timedelta(days=history_days),
        steady_band=float(raw.get("steady_band", 0.1)),
        delivery=policy,
    )


def load_config(path: Path | None = None) -> AlertConfig:
    """The config from a TOML file, or the built-in defaults when ``path`` is None."""
    if path is None:
        return parse_config(tomllib.loads(DEFAULT_RULES_TOML), where="built-in rules")
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise AlertConfigError(f"rules file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise AlertConfigError(f"rules file {path}: not valid TOML: {exc}") from exc
    return parse_config(raw, where=str(path))
