"""Checks on the arguments the model passes to role tools, shared by every role module.

Each check returns the normalised value or raises livekit's ToolError, whose message the model
reads: it names the argument, says what was wrong, and quotes back at most a short part of a
refused value, so a huge or hostile argument is never echoed whole. Free-text fields are
bounded by kind (MAX_ID_CHARS, MAX_NAME_CHARS, ...); date-times are ISO-8601 with a time zone,
kept in UTC; phone numbers are E.164.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from livekit.agents.llm import ToolError
from pydantic import Field

# limits on free-text tool arguments, by kind of field
MAX_ID_CHARS = 64  # load, ticket and other record ids
MAX_NAME_CHARS = 120  # a person's, company's or product's name
MAX_SHORT_CHARS = 500  # a reason, an issue, a stated need
MAX_TEXT_CHARS = 2000  # a description, a summary, a message
SHOWN_CHARS = 80  # how much of a refused value an error message quotes back


def enum_schema(values: tuple[str, ...]) -> Any:
    """For `Annotated[str, enum_schema(values)]`: a str parameter whose schema lists `values`.
    Checked by `one_of` in the tool, not by pydantic, so a bad value gets our message rather
    than a pydantic dump."""
    return Field(json_schema_extra={"enum": list(values)})


def shown(value: str) -> str:
    """`value` for an error message: quoted, and cut so a huge argument is not echoed whole."""
    if len(value) <= SHOWN_CHARS:
        return repr(value)
    return f"{value[:SHOWN_CHARS]!r}... ({len(value)} characters)"


def one_of(name: str, value: str, values: tuple[str, ...]) -> str:
    norm = value.strip().lower()
    if norm not in values:
        raise ToolError(f"{name} must be one of: {', '.join(values)} (got {shown(value.strip())})")
    return norm


def require_text(name: str, value: str, *, max_len: int = MAX_TEXT_CHARS) -> str:
    text = optional_text(name, value, max_len=max_len)
    if not text:
        raise ToolError(f"{name} must not be empty")
    return text


def optional_text(name: str, value: str, *, max_len: int) -> str:
    """Like require_text, but an empty value is allowed (returned as "")."""
    text = value.strip()
    if len(text) > max_len:
        raise ToolError(
            f"{name} is too long ({len(text)} characters, limit {max_len}); say it shorter"
        )
    return text


INSTANT_EXAMPLE = "2026-11-21T19:15:00Z"
MAX_INSTANT_CHARS = 40  # "2026-11-21T19:15:00.000000+00:00" (32) with room to spare


def parse_instant(name: str, value: str) -> str:
    """An ISO-8601 date-time with a time zone, normalised to UTC ("2026-11-21T19:15:00Z")."""
    text = value.strip()
    if len(text) > MAX_INSTANT_CHARS:
        raise ToolError(
            f"{name} is too long for a date-time ({len(text)} characters); "
            f"use ISO-8601 such as {INSTANT_EXAMPLE}"
        )
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ToolError(
            f"{name} must be an ISO-8601 date-time such as {INSTANT_EXAMPLE} (got {shown(text)})"
        ) from None
    if when.tzinfo is None:
        raise ToolError(f"{name} needs a time zone, e.g. {text}Z for UTC (got {shown(text)})")
    try:
        utc = when.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-23:59 is past year 9999 in UTC
        raise ToolError(
            f"{name} is out of range once converted to UTC (got {shown(text)}); "
            f"use a real date-time such as {INSTANT_EXAMPLE}"
        ) from None
    return utc.isoformat().replace("+00:00", "Z")


PHONE_EXAMPLE = "+1 555 010 2030"
MIN_PHONE_DIGITS, MAX_PHONE_DIGITS = 8, 15  # E.164: country code + number, at most 15 digits
MAX_PHONE_CHARS = 40  # room for separators around 15 digits
_PHONE_SEPARATORS = re.compile(r"[\s().-]")
_E164 = re.compile(rf"\+[1-9][0-9]{{{MIN_PHONE_DIGITS - 1},{MAX_PHONE_DIGITS - 1}}}")


def parse_phone(name: str, value: str) -> str:
    """An E.164 phone number, separators dropped ("+1 (555) 010-2030" -> "+15550102030")."""
    text = value.strip()
    if len(text) > MAX_PHONE_CHARS:
        raise ToolError(
            f"{name} is too long for a phone number ({len(text)} characters, limit "
            f"{MAX_PHONE_CHARS}); give it as {PHONE_EXAMPLE}"
        )
    compact = _PHONE_SEPARATORS.sub("", text)
    if _E164.fullmatch(compact):
        return compact
    if not compact.startswith("+") or compact.count("+") != 1:
        why = "needs exactly one +, at the start, then the country code"
    elif re.search(r"[^0-9]", compact[1:]):
        why = "may hold only digits after the + (spaces, dashes, dots and brackets are fine)"
    elif compact[1:2] == "0":
        why = "must start with a country code, which never starts with 0"
    else:
        why = f"must have {MIN_PHONE_DIGITS} to {MAX_PHONE_DIGITS} digits"
    raise ToolError(
        f"{name} must be a phone number in E.164 form such as {PHONE_EXAMPLE}: it {why} "
        f"(got {shown(text)})"
    )


def as_output(result: Mapping[str, Any]) -> str:
    # livekit hands the model str(output): send JSON, not a Python repr
    return json.dumps(result, ensure_ascii=False, sort_keys=True)
