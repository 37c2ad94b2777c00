"""Method specs on the command line: ``name`` or ``name[key=value,...]``.

``ours2[inner=false]`` runs method II without L_inner (a Table 6 ablation) next to
``ours2``; the bracketed options override the method's table for that entry only, and
the full spec is the row's label in results and tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wsolbench.config import parse_set
from wsolbench.errors import UserError


@dataclass(frozen=True)
class MethodSpec:
    name: str
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        if not self.overrides:
            return self.name
        inner = ",".join(f"{k}={_fmt(v)}" for k, v in self.overrides.items())
        return f"{self.name}[{inner}]"


def _fmt(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def split_specs(text: str | list[str]) -> list[str]:
    """Split on commas that are not inside brackets."""
    if isinstance(text, list):
        return [t.strip() for t in text if t.strip()]
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if depth != 0:
        raise UserError(f"unbalanced brackets in method list '{text}'; use name[key=value,...]")
    out.append(cur.strip())
    return [o for o in out if o]


def parse_spec(text: str) -> MethodSpec:
    text = text.strip()
    if "[" not in text:
        return MethodSpec(text)
    if not text.endswith("]"):
        raise UserError(f"method '{text}' must look like name[key=value,...]")
    name, _, inner = text[:-1].partition("[")
    overrides: dict[str, Any] = {}
    for item in [i for i in inner.split(",") if i.strip()]:
        path, value = parse_set(item)
        if len(path) != 1:
            raise UserError(f"option '{item}' of method '{name}' must be key=value")
        overrides[path[0]] = value
    return MethodSpec(name.strip(), overrides)
