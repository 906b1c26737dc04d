"""Scenarios: what happens in one room. Loaded from a file, a name in SCENARIOS_DIR, or inline
JSON (dispatch metadata), then checked against the catalog before any room is joined."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    model_validator,
    with_config,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from config import jsonio, roles
from config.catalog import Catalog
from config.errors import Problem, ScenarioError, problems_from_validation
from config.strict import StrictModel

MAX_SCENARIO_BYTES = 256 * 1024
# Use only with `fullmatch` (see is_scenario_name): Python's `$` also matches before a final
# "\n". pydantic's `pattern=` runs it in Rust's regex engine, where `$` is the end of the text.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


# What the offline ear builds its grammar from (agents/sphinx_stt.py): bounded so that no
# scenario can make that grammar slow to build or to decode (measured in bench/offline_voice.py).
MAX_HUMAN_LINES = 40
MAX_HUMAN_LINE_CHARS = 200
MAX_HUMAN_LINE_CLAUSES = 8
MAX_HUMAN_LINE_NUMBERS = 8
_CLAUSE = re.compile(r"[^.,!?;:]+[.,!?;:]*")
_NUMBER = re.compile(r"\d+")


def spoken_clauses(line: str) -> list[str]:
    """A line's clauses, punctuation kept: a VAD may cut an utterance at any of these pauses."""
    return [c.strip() for c in _CLAUSE.findall(line) if c.strip()]


def _human_line_problem(line: str) -> str | None:
    """Why the offline ear could not take `line` as an expected line, or None."""
    if len(line) > MAX_HUMAN_LINE_CHARS:
        return f"is {len(line)} characters, limit {MAX_HUMAN_LINE_CHARS}"
    clauses = len(spoken_clauses(line))
    if clauses > MAX_HUMAN_LINE_CLAUSES:
        return f"has {clauses} clauses (parts between . , ! ? ; :), limit {MAX_HUMAN_LINE_CLAUSES}"
    numbers = len(_NUMBER.findall(line.replace(",", "")))
    if numbers > MAX_HUMAN_LINE_NUMBERS:
        return f"has {numbers} numbers, limit {MAX_HUMAN_LINE_NUMBERS}"
    return None


def _bounded_human_line(line: str) -> str:
    problem = _human_line_problem(line)
    if problem is not None:
        raise PydanticCustomError("human_line_limit", "this line {problem}", {"problem": problem})
    return line


HumanLine = Annotated[str, AfterValidator(_bounded_human_line)]


def is_scenario_name(text: str) -> bool:
    """Whether `text` is a bare scenario name (no path, no trailing newline)."""
    return NAME_PATTERN.fullmatch(text) is not None


TurnPolicy = Literal["alternate", "round_robin", "addressed", "moderated"]


class CastSlot(StrictModel):
    """One seat in the room. `persona` pins a persona; otherwise the selector chooses."""

    role: str
    required: bool = True
    opens: bool = False
    leads: bool = False
    persona: str | None = None


# How long an opener waits for the first human by default, where the scenario expects humans:
# a browser caller who opens the page a while after the room was made still hears the greeting.
DEFAULT_HUMAN_WAIT_S = 60.0


class Rules(StrictModel):
    turn_policy: TurnPolicy = "alternate"
    max_turns: int = Field(default=12, ge=1, le=500)
    max_duration_s: float = Field(default=600.0, gt=0, le=4 * 3600)
    loop_guard: int = Field(
        default=2, ge=1, description="end when a persona repeats its previous line this many times"
    )
    hear: Literal["everyone", "first"] = Field(
        default="everyone",
        description="who the lead hears by voice: `everyone` in the room, each person with an "
        "ear of their own, or only the `first` caller at a time (livekit's RoomIO). A realtime "
        "lead hears through its own model, one person at a time, either way",
    )
    answered_by: Literal["floor", "lead"] = Field(
        default="floor",
        description="who answers a person: `floor`, the persona they name, else the one "
        "holding the floor, else the lead; or always the `lead` (every persona still hears it)",
    )
    wait_for_human_s: float | None = Field(
        default=None,
        ge=0,
        le=600,
        description="how long the opener waits for the first human (a phone caller: for the "
        "call to be active) before its greeting; default 60 s where the scenario expects "
        "humans, 0 (start at once) where the personas talk among themselves",
    )
    end_when_humans_leave: bool | None = Field(
        default=None,
        description="whether the room ends when every human who came has left; default: yes "
        "where the scenario expects humans, no (listeners come and go, the personas talk to "
        "the end) where it does not",
    )


class ScriptLine(StrictModel):
    """One offline-model turn: call `tool` with `args` (if given), then say `say`.

    `say` may name the cast: `{me}` is the speaker's own name, `{dispatcher}`, `{driver}`,
    ... the name of the persona cast in that role."""

    say: str = ""
    tool: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _not_empty(self) -> ScriptLine:
        if not self.say and self.tool is None:
            raise ValueError("a script line needs `say`, `tool`, or both")
        return self


NonEmpty = Annotated[str, Field(min_length=1)]
# a key on a phone's keypad, as livekit-sip reports RFC 2833 events
DTMF_KEY = re.compile(r"[0-9*#]")


class Dial(StrictModel):
    """The room phones someone: the opener speaks first once the call is answered; busy,
    declined or unanswered within `ringing_timeout_s`, the room ends as `no_answer`. The
    tenant's outbound trunk (the catalog's telephony.outbound) carries the call."""

    number: str | None = Field(
        default=None,
        pattern=r"^\+[1-9][0-9]{6,14}$",
        description="E.164; `workers.dispatch SCENARIO --call NUMBER` sets it",
    )
    ringing_timeout_s: float = Field(default=30.0, gt=0, le=120)
    max_call_s: float = Field(default=600.0, gt=0, le=4 * 3600)


class DtmfChoice(StrictModel):
    """What a key the caller presses does: `role` hands the caller to the persona in that cast
    role (the floor's hand-over), `action` "end" ends the call (the holder says goodbye)."""

    role: str | None = None
    action: Literal["end"] | None = None
    label: str = Field(default="", max_length=64, description="what the key is called, e.g. sales")

    @model_validator(mode="after")
    def _one(self) -> DtmfChoice:
        if (self.role is None) == (self.action is None):
            raise ValueError("a DTMF choice needs exactly one of `role` or `action`")
        return self


class Transfer(StrictModel):
    """What `transfer_to_human` does in this room: who is rung, for how long, and what happens
    when nobody answers or once a person has taken the caller."""

    skill: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9_-]*$",
        description="the skill a human needs (default: the transferring persona's role)",
    )
    ring_timeout_s: float = Field(default=20.0, gt=0, le=120)
    on_no_answer: Literal["voicemail", "carry_on"] = Field(
        default="voicemail",
        description="nobody answered or everyone declined: the voicemail persona takes a "
        "message, or the persona tells the caller and carries on",
    )
    after_hand_over: Literal["leave", "note_taker"] = Field(
        default="leave",
        description="the persona says goodbye and leaves, or stays silent to keep the transcript",
    )


@with_config(ConfigDict(extra="allow"))
class Load(TypedDict):
    """One load the dispatch tools can look up: an `id` plus any fields (origin, eta, ...)."""

    id: NonEmpty


LoadFields = dict[str, Any]
_LOAD_LIST = TypeAdapter(list[Load])
_LOAD_MAPPING = TypeAdapter(dict[NonEmpty, LoadFields])
LoadsInput = list[Load] | dict[str, LoadFields] | None


def _valid_loads(raw: Any) -> Any:
    """Checks either form and keeps it as written (the personas see the context verbatim).
    Dispatching by hand keeps union tags out of the error paths."""
    if raw is None:
        return None
    if isinstance(raw, list):
        _LOAD_LIST.validate_python(raw)
        return raw
    if isinstance(raw, dict):
        _LOAD_MAPPING.validate_python(raw)
        return raw
    raise PydanticCustomError(
        "loads_shape", "expected a list of loads (each with an `id`) or a mapping id -> fields"
    )


@with_config(ConfigDict(extra="allow"))
class ScenarioContext(TypedDict, total=False):
    """Data for the personas: free-form JSON (they read it all), except the keys the tools
    read, which are checked: `loads`, a list of loads with an `id` or a mapping id -> fields."""

    loads: Annotated[LoadsInput, PlainValidator(_valid_loads, json_schema_input_type=LoadsInput)]
    # who the caller is (the catalog's contact_assignments name their agents)
    contact: Annotated[str, Field(min_length=1, max_length=128)]
    # this contact's assigned human agents, ids (wins over the catalog's table)
    assigned_agents: list[Annotated[str, Field(min_length=1, max_length=48)]]


class Scenario(StrictModel):
    name: str = Field(pattern=NAME_PATTERN.pattern)
    description: str = ""
    campaign: str
    cast: tuple[CastSlot, ...] = Field(min_length=1)
    context: ScenarioContext = Field(default_factory=lambda: ScenarioContext())
    rules: Rules = Rules()
    on_no_cast: Literal["reject", "voicemail"] = "reject"
    script: dict[str, tuple[ScriptLine, ...]] = Field(
        default_factory=dict, description="offline-model lines per role, spoken in order"
    )
    dial: Dial | None = Field(default=None, description="the room places a phone call")
    transfer: Transfer = Field(
        default_factory=Transfer, description="how a persona hands the caller to a person"
    )
    dtmf: dict[str, DtmfChoice] = Field(
        default_factory=dict,
        description="a phone menu: keypad key (0-9, *, #) -> what it does (a call's key presses)",
    )
    human_lines: tuple[HumanLine, ...] = Field(
        default=(),
        max_length=MAX_HUMAN_LINES,
        description="what a simulated caller says, in order, each time the floor turns to the "
        "humans (local stage only; `workers.simulate --human` replaces them)",
    )

    @model_validator(mode="after")
    def _cast_shape(self) -> Scenario:
        roles_seen = [s.role for s in self.cast]
        dupes = sorted({r for r in roles_seen if roles_seen.count(r) > 1})
        if dupes:
            raise ValueError(f"each role may fill one slot; repeated: {', '.join(dupes)}")
        if sum(s.opens for s in self.cast) > 1:
            raise ValueError("at most one cast slot may have opens=true")
        if sum(s.leads for s in self.cast) > 1:
            raise ValueError("at most one cast slot may have leads=true")
        opener = self.opener_slot
        if not opener.required:
            raise ValueError(f"the opener ({opener.role}) must be a required slot")
        if self.rules.turn_policy == "alternate" and sum(s.required for s in self.cast) != 2:
            raise ValueError("turn_policy 'alternate' needs exactly two required slots")
        unknown = sorted(set(self.script) - set(roles_seen))
        if unknown:
            raise ValueError(f"script names roles not in the cast: {', '.join(unknown)}")
        for key, choice in self.dtmf.items():
            if not DTMF_KEY.fullmatch(key):
                raise ValueError(f"dtmf key {key!r} is not a keypad key (0-9, * or #)")
            if choice.role is not None and choice.role not in roles_seen:
                raise ValueError(f"dtmf key {key!r} names role {choice.role!r}, not in the cast")
        return self

    @property
    def expects_humans(self) -> bool:
        """Whether the personas talk with people (scripted human lines, or a turn policy that
        turns to whoever is addressed), not only among themselves."""
        return bool(self.human_lines) or self.rules.turn_policy in ("addressed", "moderated")

    @property
    def human_wait_s(self) -> float:
        """How long the opener waits for the first human (`rules.wait_for_human_s`)."""
        wait = self.rules.wait_for_human_s
        return wait if wait is not None else (DEFAULT_HUMAN_WAIT_S if self.expects_humans else 0.0)

    @property
    def ends_when_humans_leave(self) -> bool:
        """Whether the last human leaving ends the room (`rules.end_when_humans_leave`)."""
        ends = self.rules.end_when_humans_leave
        return ends if ends is not None else self.expects_humans

    @property
    def opener_slot(self) -> CastSlot:
        return next((s for s in self.cast if s.opens), self.cast[0])

    @property
    def lead_slot(self) -> CastSlot:
        """Who answers humans by default: the `leads` slot, else the opener."""
        return next((s for s in self.cast if s.leads), self.opener_slot)

    @property
    def loads(self) -> tuple[dict[str, Any], ...]:
        """`context.loads` (validated with the scenario), each load with its `id`, whichever
        form the scenario used."""
        raw = self.context.get("loads")
        if isinstance(raw, dict):
            return tuple({**fields, "id": load_id} for load_id, fields in raw.items())
        return tuple(dict(load) for load in raw or ())


def scenario_from_data(data: Any, source: str = "inline") -> Scenario:
    """Validate already parsed JSON as a scenario; raises ScenarioError naming `source`."""
    try:
        return Scenario.model_validate(data)
    except ValidationError as e:
        raise ScenarioError(source, problems_from_validation(e)) from None


def parse_scenario(text: str | bytes, source: str = "inline") -> Scenario:
    """Parse scenario JSON; raises ScenarioError naming `source` and the JSON path."""
    if len(text) > MAX_SCENARIO_BYTES:
        raise ScenarioError(
            source,
            [
                Problem(
                    "$", f"scenario is {len(text)} bytes", f"limit is {MAX_SCENARIO_BYTES} bytes"
                )
            ],
        )
    try:
        data = jsonio.loads(text)
    except jsonio.JsonInputError as e:
        raise ScenarioError(source, [e.problem]) from None
    return scenario_from_data(data, source)


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def resolve_scenario_path(ref: str, scenarios_dir: Path, *, allow_outside: bool = False) -> Path:
    """A scenario name (`dispatch_checkin`) or path, resolved safely.

    Names are looked up only inside `scenarios_dir`. Paths must stay inside it too (after
    following links) unless `allow_outside` (a local user on the command line)."""
    root = scenarios_dir.resolve()
    looks_like_path = "/" in ref or "\\" in ref or ref.endswith(".json") or ref.startswith(".")
    if not looks_like_path:
        if not is_scenario_name(ref):
            raise ScenarioError(
                ref, [Problem("$", "not a scenario name", "use letters, digits, _ and -")]
            )
        candidate = root / f"{ref}.json"
    else:
        if ".." in Path(ref).parts and not allow_outside:
            raise ScenarioError(
                ref,
                [
                    Problem(
                        "$",
                        "'..' is not allowed in a scenario reference",
                        "name a scenario in SCENARIOS_DIR",
                    )
                ],
            )
        candidate = Path(ref)
    try:
        resolved = candidate.resolve()
    except (OSError, RuntimeError, ValueError) as e:  # a link loop, a NUL byte
        raise ScenarioError(
            ref, [Problem("$", f"cannot resolve the path: {e}", "name an existing scenario file")]
        ) from None
    if not allow_outside and not _inside(resolved, root):
        raise ScenarioError(
            ref,
            [
                Problem(
                    "$",
                    f"resolves outside the scenarios directory {root}",
                    "name a scenario in SCENARIOS_DIR",
                )
            ],
        )
    if not resolved.is_file():
        known = sorted(p.stem for p in root.glob("*.json") if p.stem != "schema")
        raise ScenarioError(ref, [Problem("$", "no such scenario", f"known: {', '.join(known)}")])
    return resolved


def load_scenario(
    ref: str | Path,
    *,
    scenarios_dir: str | Path | None = None,
    allow_outside: bool = False,
) -> Scenario:
    """Load a scenario from inline JSON text, a name in SCENARIOS_DIR, or a file path.

    Untrusted input (job metadata) must keep `allow_outside=False`: names and paths then
    cannot leave SCENARIOS_DIR, by `..`, absolute paths or links."""
    if scenarios_dir is None:
        from config.settings import get_settings

        scenarios_dir = get_settings().scenarios_dir
    text = str(ref)
    if text.lstrip().startswith("{"):
        return parse_scenario(text, "inline")
    path = resolve_scenario_path(text, Path(scenarios_dir), allow_outside=allow_outside)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ScenarioError(
            str(path),
            [Problem("$", f"cannot read the file: {e.strerror}", "check its permissions")],
        ) from None
    return parse_scenario(data, str(path))


def staffable(catalog: Catalog, campaign_id: str, role: str) -> bool:
    """Whether some persona of the priority chain could ever fill `role` in the campaign."""
    campaign = catalog.campaign(campaign_id)
    chain: list[str | None] = [a.persona for a in campaign.assignments]
    chain += [campaign.legacy_persona, catalog.tenant_of(campaign_id).default_persona]
    if any(pid and catalog.persona(pid).role == role for pid in chain):
        return True
    default = catalog.system_default_persona
    return bool(
        default
        and (catalog.system_default_serves_any_role or catalog.persona(default).role == role)
    )


def check_scenario(scenario: Scenario, catalog: Catalog, source: str = "inline") -> None:
    """Refuse a scenario whose campaign, roles or personas the catalog does not know, or
    whose required roles the campaign can never staff."""
    problems: list[Problem] = []
    if scenario.campaign not in catalog.campaign_by_id:
        problems.append(
            Problem(
                "$.campaign",
                f"unknown campaign {scenario.campaign!r}",
                f"known: {', '.join(sorted(catalog.campaign_by_id))}",
            )
        )
        raise ScenarioError(source, problems)
    for i, slot in enumerate(scenario.cast):
        at = f"$.cast[{i}]"
        if slot.role not in roles.ROLES:
            problems.append(
                Problem(
                    f"{at}.role", f"unknown role {slot.role!r}", f"valid: {', '.join(roles.ROLES)}"
                )
            )
            continue
        if slot.persona is not None:
            persona = catalog.persona_by_id.get(slot.persona)
            if persona is None:
                problems.append(
                    Problem(
                        f"{at}.persona",
                        f"unknown persona {slot.persona!r}",
                        f"known: {', '.join(sorted(catalog.persona_by_id))}",
                    )
                )
            elif persona.role != slot.role:
                problems.append(
                    Problem(
                        f"{at}.persona",
                        f"persona {slot.persona!r} has role {persona.role!r}",
                        f"pin a {slot.role} persona",
                    )
                )
        elif slot.required and not staffable(catalog, scenario.campaign, slot.role):
            problems.append(
                Problem(
                    f"{at}.role",
                    f"campaign {scenario.campaign!r} has no persona for role {slot.role!r}",
                    "assign one in the catalog or make the slot optional",
                )
            )
    for role, lines in scenario.script.items():
        for j, line in enumerate(lines):
            if line.tool and line.tool not in roles.ROLE_TOOLS.get(
                role, ()
            ) + roles.COMMON_TOOLS + (roles.MODERATOR_TOOL,):
                problems.append(
                    Problem(
                        f"$.script.{role}[{j}].tool",
                        f"{role} has no tool {line.tool!r}",
                        f"valid: {', '.join(roles.ROLE_TOOLS.get(role, ()) + roles.COMMON_TOOLS)}",
                    )
                )
    problems.extend(_assigned_agent_problems(scenario, catalog))
    if problems:
        raise ScenarioError(source, problems)


def _assigned_agent_problems(scenario: Scenario, catalog: Catalog) -> list[Problem]:
    """`context.assigned_agents` names human agents of the campaign's tenant."""
    tenant = catalog.tenant_of(scenario.campaign).id
    ours = sorted(h.id for h in catalog.human_agents if h.tenant == tenant)
    problems = []
    for j, agent in enumerate(scenario.context.get("assigned_agents") or ()):
        if agent not in ours:
            problems.append(
                Problem(
                    f"$.context.assigned_agents[{j}]",
                    f"no human agent {agent!r} works for tenant {tenant!r}",
                    f"known: {', '.join(ours) or 'none (add human_agents to the catalog)'}",
                )
            )
    return problems
