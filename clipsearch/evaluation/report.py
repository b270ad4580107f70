"""Print evaluation reports as tables, and compare two runs (`--baseline prev.json`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested report as {"a.b.c": value}; lists of dicts use their first
    string field as the key (e.g. a query's text)."""
    out: dict[str, float] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            out[name] = float(value)
        elif isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        elif isinstance(value, list) and value and isinstance(value[0], Mapping):
            for item in value:
                label = next((str(v) for v in item.values() if isinstance(v, str)), "?")
                out.update(flatten(item, f"{name}.{label}."))
    return out


def format_table(current: Mapping[str, Any], baseline: Mapping[str, Any] | None = None) -> str:
    now = flatten(current)
    before = flatten(baseline) if baseline is not None else {}
    width = max(len(k) for k in now) if now else 10
    header = f"{'metric':<{width}}  {'value':>9}"
    if baseline is not None:
        header += f"  {'baseline':>9}  {'delta':>8}"
    lines = [header, "-" * len(header)]
    for key, value in now.items():
        line = f"{key:<{width}}  {value:>9.4f}"
        if baseline is not None:
            if key in before:
                line += f"  {before[key]:>9.4f}  {value - before[key]:>+8.4f}"
            else:
                line += f"  {'-':>9}  {'-':>8}"
        lines.append(line)
    return "\n".join(lines)
