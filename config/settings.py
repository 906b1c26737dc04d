"""Process settings from the environment and an optional `.env` file.

An empty (or blank) value is no value: `OPENAI_API_KEY=` as `.env.example` ships it means "not
set", whichever source it comes from. Secrets stay `SecretStr` until handed to a client, and
`describe_settings_error` explains a bad setting without ever echoing its value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from dotenv import dotenv_values
from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV_FILE = ".env"

# What reading the settings can raise: a bad value, or a .env that is not UTF-8 or unreadable.
SETTINGS_ERRORS: tuple[type[Exception], ...] = (ValidationError, UnicodeDecodeError, OSError)
_FIX = "in the environment or .env, or unset {0} for the default; .env.example lists every setting"
CAPACITY_URL_SCHEMES = ("redis", "rediss", "unix")


def _blank(value: Any) -> bool:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return isinstance(value, str) and not value.strip()


@dataclass(frozen=True)
class LiveKitCredentials:
    """The LiveKit server and the key that signs for it. The secret stays wrapped until it is
    handed to a client."""

    url: str
    api_key: str
    api_secret: SecretStr


class Settings(BaseSettings):
    """Every knob the worker and the command-line tools read. See `.env.example`."""

    model_config = SettingsConfigDict(
        env_file=ENV_FILE, env_file_encoding="utf-8", env_ignore_empty=True, extra="ignore"
    )

    livekit_url: str | None = None
    livekit_api_key: str | None = None
    livekit_api_secret: SecretStr | None = None
    openai_api_key: SecretStr | None = None
    # Another OpenAI-compatible server for every persona (a gateway, vLLM, Ollama, ...);
    # unset: api.openai.com. A persona's own `model.base_url` in the catalog wins over it.
    openai_base_url: str | None = None
    # Each model request (LLM, TTS, STT; a realtime connection): its time limit, and how often
    # it is retried (that far apart) before the persona falls back. livekit's defaults.
    model_timeout_s: float = Field(default=10.0, gt=0.0, le=120.0)
    model_max_retry: int = Field(default=3, ge=0, le=10)
    model_retry_interval_s: float = Field(default=2.0, ge=0.0, le=60.0)
    # A 429 or 503 whose Retry-After asks for at most this many seconds is waited for and sent
    # again (once per request); a longer wait fails the attempt as above (agents/retry_after.py)
    model_retry_after_max_s: float = Field(default=10.0, ge=0.0, le=60.0)

    agent_name: str = "multi-persona"
    catalog_path: Path = PROJECT_ROOT / "config" / "catalog.json"
    scenarios_dir: Path = PROJECT_ROOT / "scenarios"
    transcripts_dir: Path = Path("transcripts")

    log_format: Literal["json", "console"] = "console"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    load_threshold: float = Field(default=0.9, gt=0.0, le=1.0)
    # Whether the load reported to LiveKit counts the machine's CPU use (livekit's default
    # measure) besides the share of persona capacity in use. Turn off where other programs
    # share the CPU (a laptop running livekit-server too, the live test suite).
    load_counts_cpu: bool = True
    # Operators' load stats (GET /stats, /healthz) from the worker; 0 picks a free port.
    stats_host: str = "127.0.0.1"
    stats_port: int = Field(default=8082, ge=0, le=65535)
    stats_log_interval_s: float = Field(default=60.0, ge=0.0)  # 0: no periodic stats log
    # The address livekit-agents' own HTTP servers bind: its health server and the Prometheus
    # endpoint (livekit has one host for both). Loopback unless opened (0.0.0.0 in a container
    # whose health probe or scraper comes from outside).
    worker_http_host: str = "127.0.0.1"
    # livekit-agents' own health server; None keeps its default (8081 for `start`, free for
    # `dev`). Give each worker its own when several run on one host.
    worker_http_port: int | None = Field(default=None, ge=0, le=65535)
    # OpenTelemetry traces of rooms (workers/room/tracing.py), OTLP over HTTP; unset: none.
    # What people said goes on spans only with otel_capture_content.
    otel_exporter_otlp_endpoint: str | None = None
    otel_capture_content: bool = False
    # How many times livekit-agents retries connecting to LIVEKIT_URL (2 s, 4 s, ... 10 s apart)
    # before the worker gives up and exits 1, so a supervisor restarts it. livekit's default.
    worker_connect_retries: int = Field(default=16, ge=0, le=1000)
    # Job processes livekit keeps prewarmed for the next rooms (`start`; `dev` keeps none).
    # One, not livekit's one per core: see workers.multi.build_server for why.
    idle_processes: int = Field(default=1, ge=0, le=64)
    # How the persona that hears humans detects a human talking over it: `vad` (its own VAD,
    # in-process) or `adaptive` (livekit's ML detector, served by LiveKit's hosted inference
    # gateway: the worker then reaches a host besides LIVEKIT_URL). livekit-agents picks
    # `adaptive` itself in `dev`; the worker never lets it choose.
    interruption_mode: Literal["vad", "adaptive"] = "vad"
    # livekit-agents' Prometheus endpoint (GET /metrics) with the worker's capacity gauges
    # (workers/main/metrics.py); unset: none.
    prometheus_port: int | None = Field(default=None, ge=0, le=65535)
    # Where the job processes write the rooms' Prometheus counters and histograms for that
    # endpoint (prometheus_client's multiprocess mode; livekit empties it when the worker
    # starts). Unset, with PROMETHEUS_PORT set: a fresh temporary directory per worker.
    prometheus_multiproc_dir: Path | None = None
    # Where persona capacity is counted: unset, in this process (one worker); a Redis URL
    # (redis://[:password@]host:6379/0), one capacity shared by every worker on it. A lease
    # there expires CAPACITY_LEASE_TTL_S after its last refresh (every CAPACITY_REFRESH_S),
    # so a worker that dies frees its rooms within the TTL; each Redis call gives up after
    # CAPACITY_TIMEOUT_S. A secret: it may hold Redis's password.
    capacity_url: SecretStr | None = None
    capacity_lease_ttl_s: float = Field(default=20.0, gt=0.0, le=3600.0)
    capacity_refresh_s: float = Field(default=5.0, gt=0.0)
    capacity_timeout_s: float = Field(default=0.25, gt=0.0, le=5.0)
    # A room offered while Redis cannot answer (down, slow, or settling after it came back
    # empty): `wait` answers the offer once Redis does, within CAPACITY_WAIT_S (the load it
    # reports meanwhile is its last known one), then refuses; `refuse` refuses at once and
    # reports itself full until Redis answers. livekit-server asks for a room with psrpc's
    # default 3 s request timeout (AssignJobTimeout's 10 s never comes into play): an answer
    # later than that loses the room, so the wait stays well under it.
    capacity_when_unavailable: Literal["wait", "refuse"] = "wait"
    capacity_wait_s: float = Field(default=2.0, ge=0.0, le=2.5)
    # Where the human agents' run-time availability is kept without CAPACITY_URL (with it, in
    # Redis, so every worker sees one state): a JSON file `python -m workers.humans set` writes
    # atomically and the worker reads at each transfer. The catalog's `availability` is where
    # a human starts until someone sets it.
    humans_state_path: Path = Path(".state") / "humans.json"
    # The web page and rooms API (`python -m workers.web`). WEB_API_KEY is required by every
    # /api/ call when set, and must be set to bind anything but loopback. A secret.
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=8090, ge=0, le=65535)
    web_api_key: SecretStr | None = None

    @model_validator(mode="before")
    @classmethod
    def _drop_blank_values(cls, data: Any) -> Any:
        # env_ignore_empty covers "" from the environment and .env; this also covers blanks
        # ("  ") and constructor arguments, so every source means the same by "empty".
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not _blank(v)}
        return data

    @field_validator("capacity_url")
    @classmethod
    def _a_redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_capacity_url(value.get_secret_value())
        return value

    @field_validator("openai_base_url")
    @classmethod
    def _an_http_url(cls, value: str | None) -> str | None:
        if value is not None:
            check_base_url(value)
        return value

    @field_validator("capacity_refresh_s")
    @classmethod
    def _refresh_well_under_ttl(cls, value: float, info: ValidationInfo) -> float:
        ttl = info.data.get("capacity_lease_ttl_s")
        if ttl is not None and value > ttl / 3:
            raise ValueError(
                f"must be at most a third of CAPACITY_LEASE_TTL_S ({ttl:g} s), so a lease "
                f"outlives a missed refresh (defaults: 5 and 20)"
            )
        return value

    @field_validator("capacity_timeout_s")
    @classmethod
    def _timeout_under_refresh(cls, value: float, info: ValidationInfo) -> float:
        refresh = info.data.get("capacity_refresh_s")
        if refresh is not None and value >= refresh:
            raise ValueError(
                f"must be below CAPACITY_REFRESH_S ({refresh:g} s): a refresh must end before "
                "the next one starts (default: 0.25)"
            )
        return value

    def openai_key(self) -> SecretStr | None:
        """The OpenAI key, or None when it is not set: the one test every caller uses."""
        return self.openai_api_key

    def secret_named(self, name: str) -> SecretStr | None:
        """The value of the environment variable `name` (else of that line in ./.env), as a
        secret; None when it is unset or blank. For the per-persona keys the catalog names."""
        if name == "OPENAI_API_KEY":
            return self.openai_api_key
        value = os.environ.get(name)
        if value is None or not value.strip():
            value = dotenv_values(ENV_FILE).get(name) if Path(ENV_FILE).is_file() else None
        return SecretStr(value) if value and value.strip() else None

    def livekit_credentials(
        self, *, url: str | None = None, api_key: str | None = None, api_secret: str | None = None
    ) -> LiveKitCredentials | None:
        """The LiveKit URL, key and secret, or None when one is not set (`livekit_missing`
        names which): as `openai_key()` is for OpenAI, the one way every caller reads them.
        Values given here (the worker's command-line flags) come before the settings'."""
        url = url or self.livekit_url
        api_key = api_key or self.livekit_api_key
        secret = SecretStr(api_secret) if api_secret else self.livekit_api_secret
        if not (url and api_key and secret):
            return None
        return LiveKitCredentials(url, api_key, secret)

    def _livekit_values(self) -> dict[str, str | SecretStr | None]:
        return {
            "LIVEKIT_URL": self.livekit_url,
            "LIVEKIT_API_KEY": self.livekit_api_key,
            "LIVEKIT_API_SECRET": self.livekit_api_secret,
        }

    def livekit_missing(self) -> list[str]:
        """Names of the LiveKit settings that are not set (empty when all are)."""
        return [name for name, value in self._livekit_values().items() if not value]

    def livekit_env(self) -> dict[str, str]:
        """The LiveKit settings that are set, as environment variables (the secret unwrapped):
        for the livekit CLI, which reads only its flags and the environment."""
        return {
            name: value.get_secret_value() if isinstance(value, SecretStr) else value
            for name, value in self._livekit_values().items()
            if value
        }


# Query parameters the worker sets itself from its settings: a URL must not override them.
_URL_KEYS_OF_SETTINGS = {
    "socket_timeout": "CAPACITY_TIMEOUT_S",
    "socket_connect_timeout": "CAPACITY_TIMEOUT_S",
    "timeout": "CAPACITY_TIMEOUT_S",
    "retry_on_timeout": "CAPACITY_TIMEOUT_S",
    "retry_on_error": "CAPACITY_TIMEOUT_S",
}
_URL_EXAMPLE = (
    "e.g. redis://:password@host:6379/0, redis://[::1]:6379/0 or unix:///run/redis.sock?db=0"
)


def check_capacity_url(url: str) -> None:
    """ValueError unless `url` is a Redis URL the client will take as it is meant, checked whole
    (scheme, host and port, database, query parameters), so a bad one stops the worker at
    start rather than failing every call. The message never repeats the URL or a part of it
    that may hold a secret (the password, a query value)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in CAPACITY_URL_SCHEMES:
        raise ValueError(
            "must be a redis://, rediss:// or unix:// URL (e.g. redis://localhost:6379/0), "
            "or unset for the in-memory store"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a port that is not a number, or a bad IPv6 address, raises)
    except ValueError:
        raise ValueError(
            f"has a host or port that cannot be read ({_URL_EXAMPLE}; an IPv6 address goes in "
            "brackets)"
        ) from None
    query = parse_qs(parts.query, keep_blank_values=True)
    for key in query:
        if key in _URL_KEYS_OF_SETTINGS:
            raise ValueError(
                f"sets {key!r}, which the worker sets from {_URL_KEYS_OF_SETTINGS[key]}: "
                "remove it from the URL"
            )
    if scheme != "unix":
        database = unquote(parts.path).strip("/")
        if database and not database.isdigit():
            raise ValueError(
                f"names a database that is not a number (the path after the host must be "
                f"empty or like /0; {_URL_EXAMPLE})"
            )
    _check_query_with_the_client(url, list(query))


def _check_query_with_the_client(url: str, keys: list[str]) -> None:
    """The Redis client's own reading of the URL: a value it cannot parse, or a parameter its
    connections do not take (which would raise TypeError on every call), is refused here."""
    import inspect

    from redis.connection import parse_url

    try:
        options = parse_url(url)
    except ValueError as exc:  # "Invalid value for 'db' in connection URL.": a name, no value
        raise ValueError(f"cannot be read by the Redis client: {exc}") from None
    connection_class = options.get("connection_class")
    if connection_class is None:
        from redis.connection import Connection as connection_class
    known: set[str] = set()
    for cls in inspect.getmro(connection_class):
        init = vars(cls).get("__init__")
        if init is not None:
            known.update(inspect.signature(init).parameters)
    for key in keys:
        if key not in known:
            raise ValueError(
                f"has an unknown query parameter {key!r} (the Redis client takes db, "
                "username, password, client_name, health_check_interval, ssl_* ...)"
            )


def check_base_url(url: str) -> None:
    """ValueError unless `url` is an http(s) URL; the message never repeats it (it may hold
    credentials)."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() not in ("http", "https") or not rest.strip("/"):
        raise ValueError(
            "must be an http:// or https:// URL of an OpenAI-compatible API, with its /v1 "
            "(e.g. http://127.0.0.1:11434/v1), or unset for api.openai.com"
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def _without_value(message: str, value: Any) -> str:
    # pydantic's messages do not quote the input today; a validator's own message might.
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    if isinstance(text, str) and len(text) >= 3 and text in message:
        return message.replace(text, "<the value>")
    return message


def _describe_validation(e: ValidationError) -> str:
    problems = []
    for err in e.errors(include_url=False):
        name = "_".join(str(p) for p in err["loc"]).upper() or "SETTINGS"
        msg = _without_value(err["msg"], err.get("input"))
        problems.append(f"{name}: {msg[:1].lower()}{msg[1:]}")
    which = "it" if len(problems) == 1 else "them"
    return f"{'; '.join(problems)} (fix {which} {_FIX.format(which)})"


def describe_settings_error(e: Exception) -> str:
    """One line naming each bad setting, what is wrong and the fix; never a value."""
    if isinstance(e, ValidationError):
        return _describe_validation(e)
    if isinstance(e, UnicodeDecodeError):
        return (
            f"{ENV_FILE}: not UTF-8 text (undecodable byte at offset {e.start}): save it as UTF-8"
        )
    if isinstance(e, OSError):
        where = e.filename or ENV_FILE
        return f"{where}: cannot be read ({e.strerror or type(e).__name__}): fix or remove it"
    return f"{type(e).__name__} while reading the settings: check the environment and {ENV_FILE}"
