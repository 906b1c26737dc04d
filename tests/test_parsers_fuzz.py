"""Every parser of outside input raises only its own error type (or returns a valid result),
whatever it is fed: arbitrary bytes, text and JSON, mutated valid documents, and the known
nasties (deep nesting, huge integers, lone surrogates, bytes that are not UTF-8, NaN)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.catalog import CatalogError, load_catalog, parse_catalog
from config.jsonio import MAX_DEPTH, MAX_INT_DIGITS
from config.scenario import ScenarioError, load_scenario, parse_scenario
from tests.conftest import CATALOG_PATH, SCENARIOS_DIR
from workers.job.plan import BadMetadata, JobPlan, PlanError, parse_job_metadata, voicemail_plan

CATALOG = load_catalog(CATALOG_PATH)
CATALOG_DATA = json.loads(CATALOG_PATH.read_text(encoding="utf-8"))
SCENARIO_DATA = json.loads((SCENARIOS_DIR / "dispatch_checkin.json").read_text(encoding="utf-8"))
PLAN_DATA = json.loads(
    voicemail_plan(
        load_scenario("dispatch_checkin", scenarios_dir=SCENARIOS_DIR), CATALOG
    ).to_handoff()
)
FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _text(data: str | bytes) -> str:
    """Job metadata reaches us as str; odd bytes become lone surrogates (a nasty of its own)."""
    return data if isinstance(data, str) else data.decode("utf-8", "surrogateescape")


def _catalog(data: str | bytes) -> object:
    return parse_catalog(data, "fuzz-catalog.json")


def _scenario(data: str | bytes) -> object:
    return parse_scenario(data, "fuzz-scenario.json")


def _metadata(data: str | bytes) -> object:
    return parse_job_metadata(_text(data), catalog=CATALOG, scenarios_dir=SCENARIOS_DIR)


def _plan(data: str | bytes) -> object:
    return JobPlan.from_handoff(_text(data), CATALOG)


Parser = Callable[[str | bytes], object]
PARSERS: list[tuple[Parser, type[Exception]]] = [
    (_catalog, CatalogError),
    (_scenario, ScenarioError),
    (_metadata, BadMetadata),
    (_plan, PlanError),
]
IDS = ["catalog", "scenario", "job_metadata", "job_plan"]


def only_own_error(parse: Parser, error: type[Exception], data: str | bytes) -> str | None:
    """Run `parse`; any exception but `error` fails the test. Returns the message, if any."""
    try:
        parse(data)
    except error as e:
        message = str(e)
        message.encode("utf-8")  # printable: no lone surrogate can make printing it fail
        assert message.strip()
        return message
    return None


# -- strategies ----------------------------------------------------------------------------

# text that may hold lone surrogates (what "\ud800" escapes decode to)
texts = st.text(st.characters() | st.characters(categories=["Cs"]), max_size=12)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**150, max_value=10**200)
    | st.floats(allow_nan=True, allow_infinity=True)
    | texts
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=12,
)


def _dump(value: Any, ascii_only: bool) -> str:
    # NaN/Infinity come out as bare tokens, surrogates raw (or as \u escapes): both are fed
    return json.dumps(value, ensure_ascii=ascii_only)


@st.composite
def mutated(draw: st.DrawFn, base: Any) -> Any:
    """`base` with one value somewhere inside it replaced by arbitrary JSON: reaches past
    the top-level checks into the models and cross-checks."""
    doc = copy.deepcopy(base)
    parent, key = None, None
    node = doc
    while isinstance(node, dict | list) and node and draw(st.integers(0, 4)):
        parent = node
        key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node))))
        node = node[key]
    replacement = draw(json_values)
    if parent is None:
        return replacement
    assert key is not None  # set together with parent
    parent[key] = replacement
    return doc


BASES = [CATALOG_DATA, SCENARIO_DATA, {"scenario": "dispatch_checkin"}, PLAN_DATA]


# -- arbitrary input -----------------------------------------------------------------------


@pytest.mark.parametrize(("parse", "error"), PARSERS, ids=IDS)
@FUZZ
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes(parse: Parser, error: type[Exception], data: bytes) -> None:
    only_own_error(parse, error, data)


@pytest.mark.parametrize(("parse", "error"), PARSERS, ids=IDS)
@FUZZ
@given(text=texts | st.text(max_size=200))
def test_arbitrary_text(parse: Parser, error: type[Exception], text: str) -> None:
    only_own_error(parse, error, text)


@pytest.mark.parametrize(("parse", "error"), PARSERS, ids=IDS)
@FUZZ
@given(value=json_values, ascii_only=st.booleans())
def test_arbitrary_json(parse: Parser, error: type[Exception], value: Any, ascii_only: bool):
    only_own_error(parse, error, _dump(value, ascii_only))


@pytest.mark.parametrize(("parse", "error"), PARSERS, ids=IDS)
@FUZZ
@given(data=st.data(), ascii_only=st.booleans())
def test_mutated_valid_documents(
    parse: Parser, error: type[Exception], data: st.DataObject, ascii_only: bool
) -> None:
    base = data.draw(st.sampled_from(BASES))
    only_own_error(parse, error, _dump(data.draw(mutated(base)), ascii_only))


# -- the nasties, to every parser ----------------------------------------------------------

DEEP = 100_000
NASTIES: dict[str, str | bytes] = {
    "deep_arrays": "[" * DEEP + "]" * DEEP,
    "deep_objects": '{"a":' * DEEP + "1" + "}" * DEEP,
    "deep_arrays_under_64kb": "[" * 30_000 + "]" * 30_000,
    "deep_but_under_the_recursion_limit": "[" * 900 + "]" * 900,
    "int_5000_digits": '{"a": ' + "7" * 5000 + "}",
    "lone_surrogate_raw": '{"a": "\ud800"}',
    "lone_surrogate_escaped": '{"a": "\\ud800"}',
    "lone_surrogate_key": '{"\\udfff": 1}',
    "invalid_utf8": b'{"a": "\xff\xfe"}',
    "truncated_utf8": b'{"a": "\xc3',
    "utf16": '{"a": 1}'.encode("utf-16"),
    "nan": '{"a": NaN}',
    "infinity": "[Infinity, -Infinity]",
    "float_overflow": "[1e999]",
}


@pytest.mark.parametrize(("parse", "error"), PARSERS, ids=IDS)
@pytest.mark.parametrize("name", list(NASTIES))
def test_nasties_are_clear_errors(parse: Parser, error: type[Exception], name: str) -> None:
    assert only_own_error(parse, error, NASTIES[name]) is not None


# -- the errors name the source, the JSON path and the fix ---------------------------------


def _scenario_with(**over: Any) -> dict[str, Any]:
    data = copy.deepcopy(SCENARIO_DATA)
    data.update(over)
    return data


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"x": value}
    return value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            json.dumps(_scenario_with(rules={"max_turns": 7})).replace(
                '"max_turns": 7', '"max_turns": ' + "9" * 5000
            ),
            "fuzz-scenario.json: $.rules.max_turns: integer with 5000 digits "
            f"(at most {MAX_INT_DIGITS}; write it as a string)",
        ),
        (
            json.dumps(_scenario_with(rules={"max_duration_s": float("nan")})),
            "fuzz-scenario.json: $.rules.max_duration_s: NaN is not a JSON number "
            "(use a finite number or null)",
        ),
        (
            json.dumps(_scenario_with(rules={"max_duration_s": float("inf")})),
            "$.rules.max_duration_s: Infinity is not a JSON number",
        ),
        (
            json.dumps(_scenario_with(context={"deep": _nested(100)})),
            "fuzz-scenario.json: $.context.deep" + ".x" * (MAX_DEPTH - 2) + ": nested too deeply",
        ),
        (
            json.dumps(_scenario_with(description="\ud800")),
            "fuzz-scenario.json: $.description: lone surrogate U+D800 in a string",
        ),
        ("[" * DEEP + "]" * DEEP, "fuzz-scenario.json: $: nested too deeply"),
        (b'{"name": "\xff"}', "$: not UTF-8 text: byte 0xff at offset 10 (save the file as UTF-8)"),
    ],
    ids=["huge_int", "nan", "infinity", "deep_context", "surrogate", "deep_text", "not_utf8"],
)
def test_scenario_errors_name_the_path_and_the_fix(text: str | bytes, expected: str) -> None:
    message = only_own_error(_scenario, ScenarioError, text)
    assert message is not None and expected in message


def test_catalog_errors_name_the_path_and_the_fix() -> None:
    data = copy.deepcopy(CATALOG_DATA)
    data["personas"][1]["model"] = {"temperature": float("-inf")}
    message = only_own_error(_catalog, CatalogError, json.dumps(data))
    assert message == (
        "fuzz-catalog.json: $.personas[1].model.temperature: -Infinity is not a JSON number "
        "(use a finite number or null)"
    )


def test_files_that_are_not_utf8_name_the_file(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.json"
    catalog.write_bytes(CATALOG_PATH.read_bytes().replace(b'"Tim"', b'"T\xe9m"'))
    with pytest.raises(CatalogError, match=r"catalog\.json: \$: not UTF-8 text: byte 0xe9"):
        load_catalog(catalog)
    scenario = tmp_path / "latin1.json"
    scenario.write_bytes(
        json.dumps(_scenario_with(description="caf\xe9"), ensure_ascii=False).encode("latin-1")
    )
    with pytest.raises(ScenarioError, match=r"latin1\.json: \$: not UTF-8 text: byte 0xe9"):
        load_scenario("latin1", scenarios_dir=tmp_path)


def test_a_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(SCENARIO_DATA).encode())
    assert load_scenario("bom", scenarios_dir=tmp_path).name == "dispatch_checkin"


@pytest.mark.parametrize(
    "text",
    [NASTIES["deep_arrays_under_64kb"], NASTIES["int_5000_digits"], '{"scenario": "\\ud800"}'],
    ids=["deep", "huge_int", "surrogate"],
)
def test_job_metadata_nasties_are_bad_metadata_not_internal_errors(text: str) -> None:
    with pytest.raises(BadMetadata) as info:
        _metadata(text)
    assert info.value.problem == "not_json"
    assert info.value.detail.startswith("job metadata: $")


def test_job_metadata_with_a_raw_lone_surrogate_is_bad_metadata() -> None:
    """A str from Python code (or a decoder with surrogateescape) may hold one; `.encode()`
    of it raised UnicodeEncodeError before."""
    with pytest.raises(BadMetadata, match="lone surrogate U") as info:
        _metadata('{"scenario": "dispatch_checkin\ud800"}')
    assert info.value.problem == "not_json"


def test_job_plan_nasties_are_plan_errors() -> None:
    plan = copy.deepcopy(PLAN_DATA)
    plan["members"] = 5
    with pytest.raises(PlanError, match=r"\$\.members is not a list"):
        _plan(json.dumps(plan))
    plan["members"] = [[7, "vera", "x", True]]
    text = json.dumps(plan).replace("[[7,", "[[" + "9" * 5000 + ",")
    with pytest.raises(PlanError, match=r"\$\.members\[0\]\[0\]: integer with 5000 digits"):
        _plan(text)
