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
from config.logging import get_logger
from config.settings import Settings

log = get_logger("agents.endpoints")

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

    def client_kwargs(self, clients: ModelClients | None = None) -> dict[str, Any]:
        """`client` for an HTTP OpenAI plugin (LLM, TTS, STT): one that honours Retry-After;
        `clients`' one for this endpoint when given (the room's), else a new one."""
        if clients is not None:
            return {"client": clients.client(self)}
        return {"client": self.new_client()}

    def new_client(self) -> Any:
        return openai_client(
            api_key=self.key.get_secret_value(),
            base_url=self.base_url,
            max_wait_s=self.retry_after_max_s,
        )


class ModelClients:
    """The HTTP clients of one room's OpenAI plugins: one per server and key, shared by every
    plugin of every persona of the room (one connection pool: a connection one persona's
    request opened serves the next persona's), closed when the room ends. The plugins never
    close a client they were given."""

    def __init__(self) -> None:
        self._clients: dict[tuple[str | None, str, float], Any] = {}
        self.closed = False

    def client(self, endpoint: Endpoint) -> Any:
        if self.closed:
            raise RuntimeError("the room's model clients are closed")
        key = (endpoint.base_url, endpoint.key_env, endpoint.retry_after_max_s)
        if key not in self._clients:
            self._clients[key] = endpoint.new_client()
        return self._clients[key]

    def all(self) -> list[Any]:
        return list(self._clients.values())

    async def aclose(self) -> None:
        """Close every client (idempotent); a failure to close one is logged, never raised."""
        if self.closed:
            return
        self.closed = True
        for client in self._clients.values():
            try:
                await client.close()
            except Exception as e:  # a broken connection must not fail the room's teardown
                log.warning("model_client_close_failed", error=repr(e))


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
