"""Trackers by name: ``load_tracker(name, **options).track(video, ...) -> Tracks``."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

from .base import Prompt, PromptError, Tracker, as_clip, check_prompt, grid_points

_REGISTRY: dict[str, Callable[..., Tracker]] = {}


def register(name: str) -> Callable:
    """Class decorator adding a tracker engine to the registry under ``name``."""

    def add(cls):
        _REGISTRY[name] = cls
        cls.name = name
        return cls

    return add


def list_trackers() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def load_tracker(name: str, **options: Any) -> Tracker:
    """The tracker engine ``name`` (see `list_trackers`) built with ``options``."""
    _load_builtin()
    if name not in _REGISTRY:
        raise ValueError(f"unknown tracker {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**options)


def _load_builtin() -> None:
    # Engines register themselves on import; imported lazily so `lk` needs no model code.
    for module in ("lk", "cotracker"):
        if importlib.util.find_spec(f"{__name__}.{module}") is not None:
            importlib.import_module(f".{module}", __name__)


__all__ = [
    "Prompt",
    "PromptError",
    "Tracker",
    "as_clip",
    "check_prompt",
    "grid_points",
    "list_trackers",
    "load_tracker",
    "register",
]
