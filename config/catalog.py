"""The catalog: tenants, personas and campaigns, loaded from JSON and cross-checked."""

from __future__ import annotations

from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator

from config import jsonio, models, roles
from config.errors import CatalogError, Problem, problems_from_validation
from config.humans import ContactAssignment, HumanAgent, check_humans
from config.logging import get_logger
from config.prices import Prices
from config.settings import check_base_url
from config.strict import StrictModel
from config.telephony import Telephony, check_telephony

log = get_logger(__name__)

MAX_CATALOG_BYTES = 4 * 1024 * 1024

Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")]


class Strategy(StrEnum):
    PRIMARY_FIRST = "primary_first"
    ROUND_ROBIN = "round_robin"
    LEAST_LOADED = "least_loaded"
    RANDOM = "random"


class PipelineModels(StrictModel):
    """The models of a pipeline (VAD + STT + LLM + TTS) and the server they are on."""

    llm: str = "gpt-4.1-mini"
    stt: str = "gpt-4o-mini-transcribe"
    tts: str = "gpt-4o-mini-tts"
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    # This persona's own OpenAI-compatible server (wins over OPENAI_BASE_URL); with it, the
    # model names are that server's, not checked against OpenAI's list.
    base_url: str | None = None
    # The NAME of the environment variable holding this persona's key (default:
    # OPENAI_API_KEY); the key itself never goes in the catalog.
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")

    @field_validator("base_url")
    @classmethod
    def _an_http_url(cls, value: str | None) -> str | None:
        if value is not None:
            check_base_url(value)
        return value


class ModelSettings(PipelineModels):
    """How a persona thinks and speaks. `realtime`: one speech-to-speech model (the plugin
    ignores `temperature` there). `pipeline`: VAD + STT + LLM (uses `temperature`) + TTS.
    `fallback` (pipeline only): the models its LLM, STT and TTS fall back to when their own
    fail, through livekit's FallbackAdapter."""

    mode: Literal["realtime", "pipeline"] = "pipeline"
    realtime_model: str = "gpt-realtime"
    fallback: PipelineModels | None = None


class Persona(StrictModel):
    id: Id
    name: str = Field(min_length=1, max_length=64)
    role: str
    voice: str
    model: ModelSettings = ModelSettings()
    instructions: str = Field(min_length=1)
    tools: tuple[str, ...] = ()
    max_concurrent: int = Field(default=3, ge=1)
    active: bool = True


class Tenant(StrictModel):
    id: Id
    name: str
    tier: str = Field(min_length=1)
    allowed_tools: tuple[str, ...]
    default_persona: str | None = None


class Assignment(StrictModel):
    persona: str
    priority: Literal["primary", "backup"] = "backup"


class Campaign(StrictModel):
    id: Id
    name: str
    tenant: str
    strategy: Strategy = Strategy.PRIMARY_FIRST
    assignments: tuple[Assignment, ...] = ()
    legacy_persona: str | None = None


class Catalog(StrictModel):
    tenants: tuple[Tenant, ...]
    personas: tuple[Persona, ...]
    campaigns: tuple[Campaign, ...]
    system_default_persona: str | None = None
    system_default_serves_any_role: bool = False
    voicemail_persona: str | None = None
    # what each model costs (config/prices.py); a model with no price is reported unpriced
    prices: Prices = Prices()
    telephony: Telephony = Telephony()  # phone numbers in, trunks out (config/telephony.py)
    # people a persona can transfer a caller to, and contacts' assigned agents (config/humans.py)
    human_agents: tuple[HumanAgent, ...] = ()
    contact_assignments: tuple[ContactAssignment, ...] = ()

    @cached_property
    def persona_by_id(self) -> dict[str, Persona]:
        return {p.id: p for p in self.personas}

    @cached_property
    def tenant_by_id(self) -> dict[str, Tenant]:
        return {t.id: t for t in self.tenants}

    @cached_property
    def campaign_by_id(self) -> dict[str, Campaign]:
        return {c.id: c for c in self.campaigns}

    @cached_property
    def human_by_id(self) -> dict[str, HumanAgent]:
        return {h.id: h for h in self.human_agents}

    def assigned_humans(self, tenant: str, contact: str) -> tuple[str, ...]:
        """The human agents assigned to `contact` in the catalog's table (ids, in order)."""
        for a in self.contact_assignments:
            if a.tenant == tenant and a.contact == contact:
                return a.agents
        return ()

    def persona(self, persona_id: str) -> Persona:
        return self.persona_by_id[persona_id]

    def campaign(self, campaign_id: str) -> Campaign:
        return self.campaign_by_id[campaign_id]

    def tenant_of(self, campaign_id: str) -> Tenant:
        return self.tenant_by_id[self.campaign(campaign_id).tenant]

    def allowed_tools(self, persona: Persona, campaign_id: str) -> tuple[str, ...]:
        """The role tools offered to `persona` in `campaign_id`: listed on the persona AND
        allowed by the campaign tenant's tier. Floor tools (COMMON_TOOLS) are not gated."""
        allowed = set(self.tenant_of(campaign_id).allowed_tools)
        return tuple(t for t in persona.tools if t in allowed)


def _check_unique(items: tuple, kind: str, problems: list[Problem]) -> None:
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        if item.id in seen:
            problems.append(
                Problem(
                    f"$.{kind}[{i}].id",
                    f"duplicate id {item.id!r}",
                    f"also at index {seen[item.id]}",
                )
            )
        seen.setdefault(item.id, i)


def _choice(
    value: str, valid: tuple[str, ...] | frozenset[str], path: str, what: str
) -> Problem | None:
    if value in valid:
        return None
    return Problem(path, f"unknown {what} {value!r}", f"valid: {', '.join(sorted(valid))}")


def _pipeline_checks(m: PipelineModels, at: str) -> list[Problem | None]:
    """Known OpenAI model names, unless the models are on another server (its own names)."""
    if m.base_url is not None:
        return []
    return [
        _choice(m.llm, models.LLM_MODELS, f"{at}.llm", "LLM"),
        _choice(m.stt, models.STT_MODELS, f"{at}.stt", "STT model"),
        _choice(m.tts, models.TTS_MODELS, f"{at}.tts", "TTS model"),
    ]


def cross_check(catalog: Catalog) -> list[Problem]:
    """Every reference resolves, ids are unique, roles/tools/voices/models are known."""
    problems: list[Problem] = []
    for kind in ("tenants", "personas", "campaigns"):
        _check_unique(getattr(catalog, kind), kind, problems)
    personas = catalog.persona_by_id

    def ref(value: str | None, path: str) -> None:
        if value is not None and value not in personas:
            problems.append(
                Problem(path, f"unknown persona {value!r}", f"known: {', '.join(sorted(personas))}")
            )

    for i, p in enumerate(catalog.personas):
        at = f"$.personas[{i}]"
        checks = [_choice(p.role, roles.ROLES, f"{at}.role", "role")]
        openai_names = p.model.base_url is None  # another server's models: its own names
        if p.model.mode == "realtime":
            checks.append(_choice(p.voice, models.REALTIME_VOICES, f"{at}.voice", "realtime voice"))
            if p.model.fallback is not None:
                checks.append(
                    Problem(
                        f"{at}.model.fallback",
                        "a realtime persona cannot have a fallback (livekit's FallbackAdapter "
                        "has no realtime form)",
                        'remove it, or make the persona "mode": "pipeline"',
                    )
                )
            if openai_names:
                checks.append(
                    _choice(
                        p.model.realtime_model,
                        models.REALTIME_MODELS,
                        f"{at}.model.realtime_model",
                        "realtime model",
                    )
                )
        else:
            checks.append(_choice(p.voice, models.TTS_VOICES, f"{at}.voice", "TTS voice"))
            checks.extend(_pipeline_checks(p.model, f"{at}.model"))
            if p.model.fallback is not None:
                checks.extend(_pipeline_checks(p.model.fallback, f"{at}.model.fallback"))
        role_tools = roles.ROLE_TOOLS.get(p.role, ())
        for j, tool in enumerate(p.tools):
            if p.role in roles.ROLES and tool not in role_tools:
                checks.append(
                    Problem(
                        f"{at}.tools[{j}]",
                        f"tool {tool!r} is not a {p.role} tool",
                        f"valid: {', '.join(role_tools)}",
                    )
                )
        problems.extend(c for c in checks if c is not None)

    for i, t in enumerate(catalog.tenants):
        at = f"$.tenants[{i}]"
        for j, tool in enumerate(t.allowed_tools):
            c = _choice(tool, roles.ALL_ROLE_TOOLS, f"{at}.allowed_tools[{j}]", "tool")
            if c:
                problems.append(c)
        ref(t.default_persona, f"{at}.default_persona")

    tenants = catalog.tenant_by_id
    for i, campaign in enumerate(catalog.campaigns):
        at = f"$.campaigns[{i}]"
        if campaign.tenant not in tenants:
            problems.append(
                Problem(
                    f"{at}.tenant",
                    f"unknown tenant {campaign.tenant!r}",
                    f"known: {', '.join(sorted(tenants))}",
                )
            )
        if not campaign.assignments and campaign.legacy_persona is None:
            problems.append(
                Problem(
                    at, "campaign has neither assignments nor legacy_persona", "add at least one"
                )
            )
        seen: set[str] = set()
        for j, a in enumerate(campaign.assignments):
            ref(a.persona, f"{at}.assignments[{j}].persona")
            if a.persona in seen:
                problems.append(
                    Problem(
                        f"{at}.assignments[{j}].persona",
                        f"persona {a.persona!r} assigned twice",
                        "keep one",
                    )
                )
            seen.add(a.persona)
        ref(campaign.legacy_persona, f"{at}.legacy_persona")

    ref(catalog.system_default_persona, "$.system_default_persona")
    ref(catalog.voicemail_persona, "$.voicemail_persona")
    vm = personas.get(catalog.voicemail_persona or "")
    if vm is not None and vm.role != "voicemail":
        problems.append(
            Problem(
                "$.voicemail_persona",
                f"persona {vm.id!r} has role {vm.role!r}",
                "use a voicemail persona",
            )
        )
    problems.extend(
        check_telephony(
            catalog.telephony,
            campaigns=catalog.campaign_by_id.keys(),
            tenants_known=catalog.tenant_by_id.keys(),
        )
    )
    problems.extend(
        check_humans(
            catalog.human_agents,
            catalog.contact_assignments,
            tenants_known=catalog.tenant_by_id.keys(),
        )
    )
    return problems


def tools_no_tenant_allows(catalog: Catalog) -> list[tuple[str, str]]:
    """(persona, tool) for each tool a persona lists that no tenant's `allowed_tools` has: the
    catalog is valid, but that persona is never offered the tool."""
    allowed = {t for tenant in catalog.tenants for t in tenant.allowed_tools}
    return [(p.id, tool) for p in catalog.personas for tool in p.tools if tool not in allowed]


def parse_catalog(text: str | bytes, source: str = "inline") -> Catalog:
    """Parse and cross-check catalog JSON; raises CatalogError naming `source`."""
    if len(text) > MAX_CATALOG_BYTES:
        raise CatalogError(
            source, [Problem("$", f"catalog is {len(text)} bytes", f"limit is {MAX_CATALOG_BYTES}")]
        )
    try:
        data = jsonio.loads(text)
    except jsonio.JsonInputError as e:
        raise CatalogError(source, [e.problem]) from None
    try:
        catalog = Catalog.model_validate(data)
    except ValidationError as e:
        raise CatalogError(source, problems_from_validation(e)) from None
    problems = cross_check(catalog)
    if problems:
        raise CatalogError(source, problems)
    for persona, tool in tools_no_tenant_allows(catalog):
        log.warning(
            "persona_tool_allowed_by_no_tenant",
            catalog=source,
            persona=persona,
            tool=tool,
            fix="add it to the allowed_tools of the tenants whose campaigns use this persona",
        )
    return catalog


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Load the catalog at `path` (default: the CATALOG_PATH setting)."""
    if path is None:
        from config.settings import get_settings

        path = get_settings().catalog_path
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CatalogError(
            str(path), [Problem("$", f"cannot read the file: {e.strerror}", "check CATALOG_PATH")]
        ) from None
    return parse_catalog(data, str(path))
