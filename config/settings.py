"""Process settings from the environment and an optional `.env` file."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Every knob the worker and the command-line tools read. See `.env.example`."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

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
    # Operators' load stats (GET /stats, /healthz) from the worker; 0 picks a free port.
    stats_host: str = "127.0.0.1"
    stats_port: int = Field(default=8082, ge=0, le=65535)
    stats_log_interval_s: float = Field(default=60.0, ge=0.0)  # 0: no periodic stats log
    # livekit-agents' own health server; None keeps its default (8081 for `start`, free for
    # `dev`). Give each worker its own when several run on one host.
    worker_http_port: int | None = Field(default=None, ge=0, le=65535)

    def livekit_missing(self) -> list[str]:
        """Names of the LiveKit settings that are not set (empty when all are)."""
        values = {
            "LIVEKIT_URL": self.livekit_url,
            "LIVEKIT_API_KEY": self.livekit_api_key,
            "LIVEKIT_API_SECRET": self.livekit_api_secret,
        }
        return [name for name, value in values.items() if not value]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
