"""Untrusted JSON in, plain JSON values out: the one loader every parser uses.

`json.loads` alone lets RecursionError (deep nesting), ValueError (integers past Python's digit
limit), UnicodeError (lone surrogates, non-UTF-8 bytes) and NaN/Infinity through. Here each of
those is one `JsonInputError` carrying a `Problem` (JSON path, what, the fix), which each parser
turns into its own error type.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from config.errors import Problem

# Arrays/objects nested deeper than this are refused: no scenario or catalog needs more, and
# it keeps every later step (pydantic, json.dumps, repr) far from the recursion limit.
MAX_DEPTH = 64
# Integers longer than this are refused before int() sees them (Python stops at 4300 digits).
MAX_INT_DIGITS = 100

_SURROGATE = re.compile("[\ud800-\udfff]")


class JsonInputError(ValueError):
    """The input is not JSON this project accepts; `problem` says where and how to fix it."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.render())
        self.problem = problem


class _Refused:
    """Stands in for a number the hooks refuse, so the tree walk can report its JSON path."""

    def __init__(self, message: str, hint: str) -> None:
        self.message = message
        self.hint = hint


def _parse_int(text: str) -> int | _Refused:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        return _Refused(
            f"integer with {digits} digits", f"at most {MAX_INT_DIGITS}; write it as a string"
        )
    return int(text)


def _parse_float(text: str) -> float | _Refused:
    value = float(text)
    if not math.isfinite(value):
        return _Refused("number too large for a float", "use a smaller number or a string")
    return value


def _parse_constant(name: str) -> _Refused:
    return _Refused(f"{name} is not a JSON number", "use a finite number or null")


def _decode(data: object) -> str:
    if isinstance(data, str):
        text = data
    elif isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise JsonInputError(
                Problem(
                    "$",
                    f"not UTF-8 text: byte 0x{raw[e.start]:02x} at offset {e.start}",
                    "save the file as UTF-8",
                )
            ) from None
    else:
        raise JsonInputError(Problem("$", f"expected JSON text, got {type(data).__name__}"))
    bad = _SURROGATE.search(text)
    if bad:
        raise JsonInputError(
            Problem(
                "$",
                f"lone surrogate U+{ord(bad.group()):04X} at character {bad.start()}",
                "send valid Unicode text (UTF-8)",
            )
        )
    # Editors on Windows may start a UTF-8 file with a byte-order mark; JSON may ignore it.
    return text.removeprefix("\ufeff")


def _part(key: str | int) -> str:
    if isinstance(key, int):
        return f"[{key}]"
    # a key may hold a lone surrogate: keep the path printable
    return "." + key.encode("utf-8", "backslashreplace").decode("utf-8")


def _check_tree(value: Any) -> None:
    """Walk the parsed value without recursion: depth, refused numbers, lone surrogates."""
    stack: list[tuple[Any, str, int]] = [(value, "$", 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, _Refused):
            raise JsonInputError(Problem(path, item.message, item.hint))
        if isinstance(item, str):
            bad = _SURROGATE.search(item)
            if bad:
                raise JsonInputError(
                    Problem(
                        path,
                        f"lone surrogate U+{ord(bad.group()):04X} in a string",
                        "a \\uD800-\\uDFFF escape must be half of a surrogate pair",
                    )
                )
            continue
        if not isinstance(item, dict | list):
            continue
        if depth >= MAX_DEPTH:
            raise JsonInputError(
                Problem(path, "nested too deeply", f"at most {MAX_DEPTH} levels of [] and {{}}")
            )
        if isinstance(item, dict):
            for key, child in item.items():
                child_path = path + _part(key)
                stack.append((key, child_path, depth + 1))
                stack.append((child, child_path, depth + 1))
        else:
            stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(item))


def loads(data: str | bytes) -> Any:
    """Parse JSON text (str, or UTF-8 bytes) into plain values; raises only JsonInputError."""
    text = _decode(data)
    try:
        value = json.loads(
            text,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_parse_constant,
        )
    except json.JSONDecodeError as e:
        raise JsonInputError(
            Problem(
                "$",
                f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}",
                "fix the JSON syntax there",
            )
        ) from None
    except RecursionError:
        raise JsonInputError(
            Problem("$", "nested too deeply", f"at most {MAX_DEPTH} levels of [] and {{}}")
        ) from None
    _check_tree(value)
    return value
