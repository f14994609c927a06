"""The seeded demo world: ``generate_world`` writes it, ``INGEST_ORDER`` says how to read it."""

from __future__ import annotations

from pipelines.generate.manifest import Manifest, Planted
from pipelines.generate.world import INGEST_ORDER, generate_world

__all__ = ["INGEST_ORDER", "Manifest", "Planted", "generate_world"]
