"""Typed, lazy registries for methods and datasets.

Entries are either objects or ``"module:attr"`` strings that are imported only when
first used, so that listing or running ``cam`` never imports an optional library of
another method. Outside packages add methods through the ``wsolbench.methods``
entry-point group; they are loaded exactly like the built-in baselines.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any, Generic, Iterator, TypeVar

from wsolbench.errors import UserError, suggest

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object map that refuses duplicates and suggests on typos."""

    def __init__(self, kind: str, entry_point_group: str | None = None):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, Any] = {}
        self._origins: dict[str, str] = {}
        self._entry_points_loaded = entry_point_group is None

    def register(self, name: str, target: Any = None, *, origin: str = "code") -> Any:
        """Register ``target`` (object or ``"module:attr"``) under ``name``.

        Usable as a decorator: ``@REG.register("name")``.
        """
        if target is None:
            return lambda obj: self.register(name, obj, origin=origin)
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"invalid {self.kind} name {name!r}: use letters, digits, '_' or '-'")
        if name in self._entries and self._entries[name] is not target:
            raise ValueError(
                f"{self.kind} '{name}' is already registered (by {self._origins[name]}); "
                "choose another name"
            )
        self._entries[name] = target
        self._origins[name] = origin
        return target

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in metadata.entry_points(group=self.entry_point_group):
            origin = f"entry point {ep.value}" + (f" of {ep.dist.name}" if ep.dist else "")
            if ep.name in self._entries:
                if self._entries[ep.name] == ep.value:
                    continue
                raise UserError(
                    f"{self.kind} '{ep.name}' from {origin} clashes with the one registered by "
                    f"{self._origins[ep.name]}; uninstall one of them or rename it"
                )
            self.register(ep.name, ep.value, origin=origin)

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._entries)

    def origin(self, name: str) -> str:
        self._load_entry_points()
        return self._origins[name]

    def __contains__(self, name: str) -> bool:
        self._load_entry_points()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        """Return the registered object, importing a lazy entry on first use."""
        self._load_entry_points()
        if name not in self._entries:
            raise UserError(
                f"unknown {self.kind} '{name}'{suggest(name, self._entries)}; "
                f"known: {', '.join(sorted(self._entries))}"
            )
        target = self._entries[name]
        if isinstance(target, str):
            target = _import_target(target, f"{self.kind} '{name}'")
            self._entries[name] = target
        return target


def _import_target(spec: str, what: str) -> Any:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(
            f"{what} needs a library that is not installed ({exc}); install the extra it names "
            "in the README (for example: pip install 'wsolbench[cams]')"
        ) from exc
    obj: Any = module
    for part in attr.split(".") if attr else []:
        obj = getattr(obj, part)
    return obj


def parse_names(text: str | list[str], registry: Registry[Any]) -> list[str]:
    """Split ``"a,b,c"`` and check every name, suggesting on typos."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    if not names:
        raise UserError(f"no {registry.kind} given")
    for n in names:
        registry.get(n)
    if len(set(names)) != len(names):
        raise UserError(f"a {registry.kind} is named twice in {','.join(names)}")
    return names


