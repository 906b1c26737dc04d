"""Variants of the shipped catalog that tests share."""

from __future__ import annotations

from typing import Any


def tim_alone_once(data: dict[str, Any]) -> dict[str, Any]:
    """The shipped catalog's data (changed in place) with freight-dispatch staffed by tim
    alone, one room at a time (dana, its backup and the tenant's default, inactive)."""
    for p in data["personas"]:
        if p["id"] == "tim":
            p["max_concurrent"] = 1
        if p["id"] == "dana":
            p["active"] = False
    for c in data["campaigns"]:
        if c["id"] == "freight-dispatch":
            c["assignments"] = [{"persona": "tim", "priority": "primary"}]
    return data
