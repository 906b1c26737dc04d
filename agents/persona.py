"""The persona base agent: the floor tools every persona has and the requests they make of the
floor, how a human's line reaches every persona, the tenant limit on which tools the model is
offered, and the registry of role agents (`build_agent`). What a persona is told is built in
agents/instructions.py; the checks on tool arguments live in agents/tool_args.py.

Role agents (agents/dispatcher.py, ...) subclass PersonaAgent with `role=` and `brief=` and
define their tools as plain async methods named like the tool. They are deliberately NOT
decorated with @function_tool: livekit's Agent offers every decorated method to the model, and
a tenant's tier may forbid some of them. PersonaAgent wraps only the allowed methods with
function_tool() and passes them as `tools=`, so a forbidden tool never reaches the model; a
class that decorates a method anyway is refused when it is defined.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from livekit.agents import Agent, function_tool, llm
from livekit.agents.llm import StopResponse, ToolError
from livekit.agents.llm.tool_context import is_function_tool, is_raw_function_tool

from agents.instructions import ROLE_BRIEFS, build_instructions
from agents.room_data import RoomData
from agents.tool_args import (
    MAX_ID_CHARS,
    MAX_NAME_CHARS,
    MAX_SHORT_CHARS,
    MAX_TEXT_CHARS,
    as_output,
    require_text,
    shown,
)
from config import roles
from config.catalog import Persona
from config.logging import get_logger

log = get_logger(__name__)


# ---- floor requests: what the floor tools ask the stage's floor controller to do ----------


@dataclass(frozen=True)
class HandOverRequest:
    from_persona: str  # persona ids
    to_persona: str
    summary: str


@dataclass(frozen=True)
class EndRequest:
    persona: str
    reason: str


@dataclass(frozen=True)
class NextSpeakerRequest:
    persona: str
    to_persona: str


@dataclass(frozen=True)
class TransferRequest:
    """Hand the caller to a person (a human agent): the floor rings them after this line."""

    persona: str
    reason: str  # why a person is needed, in a few words
    summary: str  # what the person needs to know: who the caller is, what they want


FloorRequest = HandOverRequest | EndRequest | NextSpeakerRequest | TransferRequest

# A finished human turn, as the persona that hears the humans heard it (its text).
HumanTurn = Callable[[str], None]


class FloorRequests(Protocol):
    def submit(self, request: FloorRequest) -> str:
        """Accept a request and return text for the model, or raise ValueError to refuse."""
        ...


class RecordingFloor:
    """A FloorRequests that only records requests (tests, standalone use).

    With `refuse`, every request is refused with that reason instead."""

    def __init__(self, *, refuse: str | None = None) -> None:
        self.requests: list[FloorRequest] = []
        self._refuse = refuse

    def submit(self, request: FloorRequest) -> str:
        if self._refuse is not None:
            raise ValueError(self._refuse)
        self.requests.append(request)
        match request:
            case HandOverRequest(to_persona=to):
                return f"ok: hand-over to {to} requested"
            case NextSpeakerRequest(to_persona=to):
                return f"ok: {to} speaks next"
            case EndRequest():
                return "ok: the conversation will end after your reply"
            case TransferRequest():
                return "ok: a person will be rung after your reply"
            case _:
                raise TypeError(f"not a floor request: {request!r}")


# ---- the registry: each role module's class registers its role here ------------------------

_ROLE_AGENTS: dict[str, type[PersonaAgent]] = {}


# ---- the tenant gate: role tools are plain methods -----------------------------------------


def _is_livekit_tool(member: object) -> bool:
    """A livekit function tool, however it is held: decorated, wrapped, or a static/class
    method around one (livekit's Agent finds all of these on its own)."""
    inner = getattr(member, "__func__", member)  # staticmethod / classmethod
    candidates = (inner, getattr(inner, "__wrapped__", None))
    return any(is_function_tool(c) or is_raw_function_tool(c) for c in candidates) or any(
        hasattr(inner, attr) for attr in ("__livekit_tool_info", "__livekit_raw_tool_info")
    )


def _refuse_decorated_tools(cls: type) -> None:
    """The tenant gate only holds if PersonaAgent alone decides which tools are offered."""
    decorated = sorted(
        {name for klass in cls.__mro__ for name, m in vars(klass).items() if _is_livekit_tool(m)}
    )
    if decorated:
        raise TypeError(
            f"{cls.__module__}.{cls.__qualname__}: {', '.join(decorated)} "
            f"{'is' if len(decorated) == 1 else 'are'} decorated with livekit's @function_tool; "
            "role tools must be plain async methods named like the tool (no decorator) and "
            "listed in config/roles.py ROLE_TOOLS: PersonaAgent offers the model only those the "
            "tenant's allowed_tools permit, while a decorated method would be offered to every "
            "tenant (and twice where allowed)"
        )


# ---- the agent ------------------------------------------------------------------------------


class PersonaAgent(Agent):
    """One persona in one room. Subclasses: `class X(PersonaAgent, role="...", brief=...)`."""

    role: ClassVar[str] = ""

    def __init_subclass__(cls, *, role: str | None = None, brief: str = "", **kw: Any) -> None:
        super().__init_subclass__(**kw)
        _refuse_decorated_tools(cls)
        if role is None:
            return
        missing = [t for t in roles.ROLE_TOOLS.get(role, ()) if not callable(getattr(cls, t, 0))]
        if role not in roles.ROLES or missing:
            raise TypeError(f"{cls.__name__}: role {role!r} unknown or tools missing: {missing}")
        cls.role = role
        ROLE_BRIEFS[role] = " ".join(brief.split())  # one paragraph, however it was wrapped
        _ROLE_AGENTS[role] = cls

    def __init__(
        self,
        persona: Persona,
        *,
        room_data: RoomData,
        cast: Mapping[str, Persona],
        floor: FloorRequests,
        moderator: bool = False,
        chat_ctx: llm.ChatContext | None = None,
        on_human_turn: HumanTurn | None = None,
    ) -> None:
        if self.role and persona.role != self.role:
            raise ValueError(f"persona {persona.id!r} has role {persona.role!r}, not {self.role!r}")
        self.persona = persona
        self.room_data = room_data  # the scenario and the shared state, not the LiveKit room
        self.cast: dict[str, Persona] = dict(cast)
        self.moderator = moderator
        self._floor = floor
        # Given to the persona that hears the humans: each finished human turn goes to the
        # stage (and on to the floor, which picks the one persona that answers).
        self._on_human_turn = on_human_turn
        names = self._tool_names()
        super().__init__(
            id=persona.id,
            instructions=build_instructions(
                persona, room_data.scenario, self.cast, moderator=moderator
            ),
            # bound methods wrapped here, not decorated: only these are offered to the model
            tools=[function_tool(getattr(self, name)) for name in names],
            chat_ctx=chat_ctx,
        )
        if self.offered_tool_names != names:  # a tool attached to the class after definition
            raise TypeError(
                f"{type(self).__qualname__} offers {self.offered_tool_names}, not {names}: "
                "role tools must be plain async methods, never livekit function tools"
            )

    def _tool_names(self) -> list[str]:
        data = self.room_data
        allowed = set(data.catalog.allowed_tools(self.persona, data.scenario.campaign))
        names = [t for t in roles.ROLE_TOOLS.get(self.role, ()) if t in allowed]
        names += roles.COMMON_TOOLS
        if self.moderator:
            names.append(roles.MODERATOR_TOOL)
        return names

    async def on_user_turn_completed(
        self, turn_ctx: llm.ChatContext, new_message: llm.ChatMessage
    ) -> None:
        """A human finished speaking. With a floor listening, hand the line to it and stop
        the framework's own reply (StopResponse also keeps the line out of this context: the
        floor relays it to every persona alike)."""
        if self._on_human_turn is None:
            return
        text = (new_message.text_content or "").strip()
        if text:
            self._on_human_turn(text)
        raise StopResponse()

    @property
    def offered_tool_names(self) -> list[str]:
        """Exactly the tool names the model is offered."""
        return [t.id for t in self.tools]

    # -- helpers for role tools --

    def record(self, tool: str, args: dict[str, Any], result: dict[str, Any]) -> str:
        """Keep a state-changing result in the room's outcome; return the model's output."""
        self.room_data.outcome.record(self.persona.id, tool, args, result)
        log.info("tool_recorded", persona=self.persona.id, tool=tool)
        return as_output(result)

    def find_load(self, load_id: str) -> dict[str, Any]:
        load = self.room_data.find_load(require_text("load_id", load_id, max_len=MAX_ID_CHARS))
        if load is None:
            known = ", ".join(sorted(v["id"] for v in self.room_data.loads.values())) or "none"
            raise ToolError(f"no load {load_id.strip()!r} on file; known loads: {known}")
        return load

    # -- the floor tools every persona has --

    def _others(self) -> str:
        return ", ".join(
            f"{p.name} ({role})" for role, p in self.cast.items() if p.id != self.persona.id
        )

    def _resolve(self, to: str) -> Persona:
        """A cast member other than me, by role, name or id (any case)."""
        key = require_text("to", to, max_len=MAX_NAME_CHARS).casefold()
        me = self.persona
        matches = [
            p
            for role, p in self.cast.items()
            if key in (role.casefold(), p.name.casefold(), p.id.casefold())
        ]
        for p in matches:
            if p.id != me.id:
                return p
        others = self._others() or "nobody else"
        if matches or key in (me.name.casefold(), me.role.casefold(), me.id.casefold()):
            raise ToolError(
                f"{shown(to.strip())} is you; choose someone else in the room: {others}"
            )
        raise ToolError(f"nobody called {shown(to.strip())} is in the room; in the room: {others}")

    def _submit(self, request: FloorRequest) -> str:
        try:
            return self._floor.submit(request)
        except ValueError as e:
            raise ToolError(f"the floor refused: {e}") from None

    async def hand_over(self, to: str, summary: str) -> str:
        """Pass the conversation to another persona in this room, with a summary for them.

        Args:
            to: who takes over: their name or their role
            summary: what they need to know: who the caller is, what they want, what was done
        """
        target = self._resolve(to)
        text = require_text("summary", summary, max_len=MAX_TEXT_CHARS)
        return self._submit(HandOverRequest(self.persona.id, target.id, text))

    async def end_conversation(self, reason: str) -> str:
        """End the conversation for everyone, once its goal is reached. Say goodbye after.

        Args:
            reason: why the conversation is over, in a few words
        """
        return self._submit(
            EndRequest(self.persona.id, require_text("reason", reason, max_len=MAX_SHORT_CHARS))
        )

    async def transfer_to_human(self, reason: str, summary: str) -> str:
        """Hand the caller to a person on the staff, when you cannot help or they ask for one.
        Tell the caller you are connecting them; they hear a hold line until someone answers.

        Args:
            reason: why a person is needed, in a few words
            summary: what the person needs to know: who the caller is, what they need, what
                you have done
        """
        return self._submit(
            TransferRequest(
                self.persona.id,
                require_text("reason", reason, max_len=MAX_SHORT_CHARS),
                require_text("summary", summary, max_len=MAX_TEXT_CHARS),
            )
        )

    async def next_speaker(self, to: str) -> str:
        """Choose who speaks after you (you moderate this room).

        Args:
            to: the next speaker: their name or their role
        """
        return self._submit(NextSpeakerRequest(self.persona.id, self._resolve(to).id))


def build_agent(
    persona: Persona,
    *,
    room_data: RoomData,
    cast: Mapping[str, Persona],
    floor: FloorRequests,
    moderator: bool = False,
    chat_ctx: llm.ChatContext | None = None,
    on_human_turn: HumanTurn | None = None,
) -> PersonaAgent:
    """The role's agent class for `persona`, built for this room. `on_human_turn` is for the
    persona that hears the humans: it receives each human turn the persona's session heard,
    and the framework's own reply to it is stopped (the floor chooses who answers)."""
    cls = _ROLE_AGENTS.get(persona.role)
    if cls is None:
        raise ValueError(
            f"no agent for role {persona.role!r}; known roles: {', '.join(sorted(_ROLE_AGENTS))}"
        )
    return cls(
        persona,
        room_data=room_data,
        cast=cast,
        floor=floor,
        moderator=moderator,
        chat_ctx=chat_ctx,
        on_human_turn=on_human_turn,
    )
