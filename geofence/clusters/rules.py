"""Cluster rules: what to count, where and how long, and when a count fires."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import Final, get_args

from geofence.clusters.types import (
    FireOn,
)
from geofence.errors import GeofenceError


class ClusterRuleError(GeofenceError, ValueError):
    """A cluster rule is malformed or names an unknown tag."""


class ClusterInputError(GeofenceError, ValueError):
    """A frame or value handed to the cluster pipeline is not usable."""


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True, slots=True)
class ClusterRule:
    """Raise a cluster when more than ``more_than`` tickets tagged ``tag`` fall in a cell and
    its ``k_ring`` within ``window`` (and/or when that count is improbable, see ``fire_on``).

    ``more_than=19`` fires at 20 tickets. ``p_value_max`` is inclusive: fires when
    ``p <= p_value_max``.
    """

    tag: str
    more_than: int
    version: str
    resolution: int = 7
    k_ring: int = 1
    window: timedelta = timedelta(hours=72)
    fire_on: FireOn = "rule"
    p_value_max: float = 0.001

    def __post_init__(self) -> None:
        problems = _rule_problems(self)
        if problems:
            raise ClusterRuleError(f"rule for tag {self.tag!r}: " + "; ".join(problems))

    @property
    def min_count_to_fire(self) -> int:
        """The smallest ring count that passes the threshold (``more_than + 1``)."""
        return self.more_than + 1


def _rule_problems(rule: ClusterRule) -> list[str]:
    problems: list[str] = []
    if not rule.tag:
        problems.append("tag is empty")
    if not rule.version:
        problems.append("version is empty")
    if not 0 <= rule.resolution <= 15:
        problems.append(f"resolution={rule.resolution} is outside [0, 15]")
    if rule.k_ring < 0:
        problems.append(f"k_ring={rule.k_ring} is negative")
    if rule.window <= timedelta(0):
        problems.append(f"window={rule.window} is not positive")
    if rule.more_than < 0:
        problems.append(f"more_than={rule.more_than} is negative")
    if rule.fire_on not in get_args(FireOn):
        problems.append(f"fire_on={rule.fire_on!r} is not one of {get_args(FireOn)}")
    if not 0.0 < rule.p_value_max < 1.0:
        problems.append(f"p_value_max={rule.p_value_max} is outside (0, 1)")
    return problems


_RULE_FIELDS: Final = frozenset(f.name for f in fields(ClusterRule))


def load_rules(mapping: Sequence[Mapping[str, object]], known_tags: set[str]) -> list[ClusterRule]:
    """Build and validate rules from plain mappings (e.g. parsed YAML).

    ``window`` may be a ``timedelta`` or given as ``window_h`` (hours). Every error names the
    rule index. An unknown tag fails here, not when the first ticket arrives.
    """
    rules: list[ClusterRule] = []
    seen: dict[tuple[str, int, int, str], int] = {}
    for index, raw in enumerate(mapping):
        where = f"cluster rule #{index}"
        values = dict(raw)
        if "window_h" in values:
            hours = values.pop("window_h")
            if not isinstance(hours, int | float) or isinstance(hours, bool):
                raise ClusterRuleError(f"{where}: window_h={hours!r} is not a number of hours")
            values["window"] = timedelta(hours=hours)
        unknown = sorted(set(values) - _RULE_FIELDS)
        if unknown:
            raise ClusterRuleError(
                f"{where}: unknown key(s) {unknown}; expected some of {sorted(_RULE_FIELDS)}"
            )
        missing = sorted({"tag", "more_than", "version"} - set(values))
        if missing:
            raise ClusterRuleError(f"{where}: missing required key(s) {missing}")
        tag = values["tag"]
        if tag not in known_tags:
            raise ClusterRuleError(
                f"{where}: tag={tag!r} is not a known tag; known tags are {sorted(known_tags)}"
            )
        try:
            rule = ClusterRule(**values)  # type: ignore[arg-type]
        except (ClusterRuleError, TypeError) as exc:
            raise ClusterRuleError(f"{where}: {exc}") from exc
        key = (rule.tag, rule.resolution, rule.k_ring, rule.version)
        if key in seen:
            raise ClusterRuleError(
                f"{where}: duplicates rule #{seen[key]} (tag, resolution, k_ring, version)={key}"
            )
        seen[key] = index
        rules.append(rule)
    return rules
