"""Chained forms, registered by the later stage on the one it reads from (the DataPipes way).

``ShardLister(...).memmap().windows(1024).batch(32).loader()`` reads left to right, but the
data path imports bottom to top: ``reader.py`` registers ``memmap`` on ``ShardLister``,
``sampler.py`` registers ``windows`` on ``MemmapReader``, and so on, so a lower module never
names a higher one. A chained form is found once its module is imported; ``Stage`` imports
the stages on the first lookup that misses, through a hook the package sets (so
``from streamtok.shards import ShardLister`` alone still chains).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
_import_hooks: list[Callable[[], None]] = []
_providers: dict[str, Callable[..., Any]] = {}


def provide(name: str, fn: Callable[..., Any]) -> None:
    """Offer ``fn`` under ``name`` to the data path (the package wires tools in without the data path importing them)."""
    _providers[name] = fn


def provided(name: str) -> Callable[..., Any]:
    """What was offered under ``name`` (see :func:`provide`)."""
    try:
        return _providers[name]
    except KeyError:
        raise LookupError(f"nothing provides {name!r}; import streamtok first") from None


def on_missing_form(hook: Callable[[], None]) -> None:
    """Run ``hook`` (import the stage modules) the first time a chained form is not found."""
    _import_hooks.append(hook)


def chained(base: type, name: str | None = None) -> Callable[[F], F]:
    """Register the decorated function as method ``name`` (default: its own name) of ``base``."""

    def register(fn: F) -> F:
        setattr(base, name or fn.__name__, fn)
        return fn

    return register


class Stage:
    """Base of the data-path stages that later stages extend with chained forms."""

    def __getattr__(self, name: str) -> Any:  # only called when normal lookup fails
        if not name.startswith("_") and _import_hooks:
            while _import_hooks:
                _import_hooks.pop()()
            try:
                return object.__getattribute__(self, name)
            except AttributeError:
                pass
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
