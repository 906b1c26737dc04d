"""One error type for bad configuration input: names the source, the JSON path, and the fix."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydantic import ValidationError


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: where (JSON path), what, and what would be right."""

    path: str
    message: str
    hint: str = ""

    def render(self) -> str:
        text = f"{self.path}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text


def printable(text: str) -> str:
    """`text` with any lone surrogate escaped, so printing an error can never fail."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class ConfigError(ValueError):
    """Bad catalog or scenario input. `source` is a file path or "inline"."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        # a path from the command line may hold undecodable bytes (surrogate escapes)
        self.source = printable(source)
        self.problems = list(problems)
        lines = [printable(f"{self.source}: {p.render()}") for p in self.problems]
        super().__init__("\n".join(lines))


class CatalogError(ConfigError):
    """The catalog is invalid."""


class ScenarioError(ConfigError):
    """The scenario is invalid, or does not fit the catalog."""


def json_path(loc: Iterable[str | int]) -> str:
    """('personas', 2, 'voice') -> '$.personas[2].voice'."""
    out = "$"
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


_PYDANTIC_HINTS = {
    "extra_forbidden": "remove it: unknown fields are refused",
    "missing": "add it",
    "too_long": "shorten it to the limit",
    "human_line_limit": "shorten it or split it into several lines",
}


def problems_from_validation(err: ValidationError) -> list[Problem]:
    """Turn pydantic's errors into Problems with JSON paths and hints."""
    problems = []
    for e in err.errors(include_url=False):
        loc = [p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        problems.append(Problem(json_path(loc), e["msg"], _PYDANTIC_HINTS.get(e["type"], "")))
    return problems
