"""Which OpenAI-compatible server a persona's plugins talk to, and with which key.

The server: the persona's `model.base_url`, else OPENAI_BASE_URL, else api.openai.com. The key:
the variable the persona's `model.api_key_env` names, else OPENAI_API_KEY. No key: the persona
runs on the offline model. The key stays wrapped until `plugin_kwargs()` hands it over, and
only the variable's NAME and the server's host are ever logged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from agents.retry_after import openai_client
from config.catalog import Persona, PipelineModels
from config.settings import Settings

DEFAULT_KEY_ENV = "OPENAI_API_KEY"
DEFAULT_HOST = "api.openai.com"


@dataclass(frozen=True)
class Endpoint:
    key: SecretStr
    key_env: str = DEFAULT_KEY_ENV  # the variable the key came from (for messages, never the key)
    base_url: str | None = None  # None: the plugins' default, api.openai.com
    retry_after_max_s: float = 10.0  # MODEL_RETRY_AFTER_MAX_S (agents/retry_after.py)

    @property
    def host(self) -> str:
        """The server's host[:port], without any credentials a URL may carry."""
        if self.base_url is None:
            return DEFAULT_HOST
        parts = urlsplit(self.base_url)
        host = parts.hostname or "?"
        return f"{host}:{parts.port}" if parts.port else host

    def plugin_kwargs(self) -> dict[str, Any]:
        """`api_key` (unwrapped only here) and `base_url` for an OpenAI plugin constructor."""
        kwargs: dict[str, Any] = {"api_key": self.key.get_secret_value()}
        if self.base_url is not None:
            kwargs["base_url"] = self.base_url
        return kwargs

    def client_kwargs(self) -> dict[str, Any]:
        """`client` for an HTTP OpenAI plugin (LLM, TTS, STT): one that honours Retry-After."""
        client = openai_client(
            api_key=self.key.get_secret_value(),
            base_url=self.base_url,
            max_wait_s=self.retry_after_max_s,
        )
        return {"client": client}


def key_env_of(persona: Persona) -> str:
    return persona.model.api_key_env or DEFAULT_KEY_ENV


def endpoint_of(models: PipelineModels, settings: Settings) -> Endpoint | None:
    """The server and key of these model settings (a persona's, or its fallback's), or None
    when the key is not set."""
    name = models.api_key_env or DEFAULT_KEY_ENV
    key = settings.secret_named(name)
    if key is None:
        return None
    base_url = models.base_url or settings.openai_base_url
    return Endpoint(key, name, base_url, settings.model_retry_after_max_s)


def endpoint_for(persona: Persona, settings: Settings) -> Endpoint | None:
    """`persona`'s server and key, or None when its key is not set (the offline model)."""
    return endpoint_of(persona.model, settings)


def require_endpoint(persona: Persona, settings: Settings) -> Endpoint:
    endpoint = endpoint_for(persona, settings)
    if endpoint is None:
        name = key_env_of(persona)
        raise ValueError(
            f"{name} is not set: persona {persona.id!r}'s OpenAI models need it. Set it in the "
            "environment or .env, or run offline with agents.offline.offline_models()."
        )
    return endpoint


def models_choice(personas: Iterable[Persona], settings: Settings) -> dict[str, Any]:
    """What the room's personas will run on, for the log: the models, the voice, and the
    servers' hosts (never a key)."""
    hosts: set[str] = set()
    offline: list[str] = []
    for p in personas:
        endpoint = endpoint_for(p, settings)
        if endpoint is None:
            offline.append(p.id)
        else:
            hosts.add(endpoint.host)
    if not hosts:
        return {"models": "offline", "voice": "espeak-ng + pocketsphinx"}
    choice: dict[str, Any] = {
        "models": "openai",
        "voice": "catalog voices",
        "endpoints": ",".join(sorted(hosts)),
    }
    if offline:  # some personas' keys are not set: those speak offline
        choice["models"] = "openai+offline"
        choice["offline_personas"] = ",".join(sorted(offline))
    return choice
