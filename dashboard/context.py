"""What a running app needs: settings and the store gateway, created once per app."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from pipelines.settings import Settings
from pipelines.store.gateway import Store


@dataclass
class AppContext:
    settings: Settings

    @cached_property
    def store(self) -> Store:
        return Store(self.settings.store_location)
