"""Process settings from the environment and an optional `.env` file.

An empty (or blank) value is no value: `OPENAI_API_KEY=` as `.env.example` ships it means "not
set", whichever source it comes from. Secrets stay `SecretStr` until handed to a client, and
`describe_settings_error` explains a bad setting without ever echoing its value.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

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


class Settings(BaseSettings):
    """Every knob the worker and the command-line tools read. See `.env.example`."""

    model_config = SettingsConfigDict(
        env_file=ENV_FILE, env_file_encoding="utf-8", env_ignore_empty=True, extra="ignore"
    )

    livekit_url: str | None = None
    livekit_api_key: str | None = None
    livekit_api_secret: SecretStr | None = None
    openai_api_key: SecretStr | None = None

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
    # How many times livekit-agents retries connecting to LIVEKIT_URL (2 s, 4 s, ... 10 s apart)
    # before the worker gives up and exits 1, so a supervisor restarts it. livekit's default.
    worker_connect_retries: int = Field(default=16, ge=0, le=1000)
    # How the persona that hears humans detects a human talking over it: `vad` (its own VAD,
    # in-process) or `adaptive` (livekit's ML detector, served by LiveKit's hosted inference
    # gateway: the worker then reaches a host besides LIVEKIT_URL). livekit-agents picks
    # `adaptive` itself in `dev`; the worker never lets it choose.
    interruption_mode: Literal["vad", "adaptive"] = "vad"
    # livekit-agents' Prometheus endpoint (GET /metrics) with the worker's capacity gauges
    # (workers/main/metrics.py); unset: none.
    prometheus_port: int | None = Field(default=None, ge=0, le=65535)
    # Where persona capacity is counted: unset, in this process (one worker); a Redis URL
    # (redis://[:password@]host:6379/0), one capacity shared by every worker on it. A lease
    # there expires CAPACITY_LEASE_TTL_S after its last refresh (every CAPACITY_REFRESH_S),
    # so a worker that dies frees its rooms within the TTL; each Redis call gives up after
    # CAPACITY_TIMEOUT_S. A secret: it may hold Redis's password.
    capacity_url: SecretStr | None = None
    capacity_lease_ttl_s: float = Field(default=20.0, gt=0.0, le=3600.0)
    capacity_refresh_s: float = Field(default=5.0, gt=0.0)
    capacity_timeout_s: float = Field(default=0.25, gt=0.0, le=5.0)

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

    def livekit_missing(self) -> list[str]:
        """Names of the LiveKit settings that are not set (empty when all are)."""
        values = {
            "LIVEKIT_URL": self.livekit_url,
            "LIVEKIT_API_KEY": self.livekit_api_key,
            "LIVEKIT_API_SECRET": self.livekit_api_secret,
        }
        return [name for name, value in values.items() if not value]


def check_capacity_url(url: str) -> None:
    """ValueError unless `url` names a Redis; the message never repeats the URL (it may hold
    a password)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in CAPACITY_URL_SCHEMES:
        raise ValueError(
            "must be a redis://, rediss:// or unix:// URL (e.g. redis://localhost:6379/0), "
            "or unset for the in-memory store"
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
