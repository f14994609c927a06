"""Page registry. Each page module exposes ``PAGE``; ``create_app`` registers them in order."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dash import Dash

PAGE_MODULES: tuple[str, ...] = (
    "dashboard.pages.status",
    "dashboard.pages.dispatch",
    "dashboard.pages.ticket",
    "dashboard.pages.alerts",
    "dashboard.pages.analytics",
    "dashboard.pages.replay",
)


@dataclass(frozen=True)
class Page:
    """A page: its path, menu name, who may see it, layout factory and callback registrar."""

    path: str
    name: str
    layout: Callable[..., Any]
    register: Callable[[Dash, Any], None]
    roles: frozenset[str] = frozenset({"dispatcher", "analyst", "warehouse"})
    in_menu: bool = True


def load_pages() -> list[Page]:
    return [importlib.import_module(m).PAGE for m in PAGE_MODULES]
