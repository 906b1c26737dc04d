"""What the personas' models cost: the catalog's `prices` and the cost of one model's usage.

Prices are per model (provider + model name, as livekit's usage reports them), in one currency,
as of a date. Each rate is keyed by what it prices, in fixed units:

- tokens (`input_tokens`, `cached_input_tokens`, `input_audio_tokens`,
  `cached_input_audio_tokens`, `output_tokens`, `output_audio_tokens`): per 1,000,000 tokens;
- `characters`: TTS characters, per 1,000,000;
- `audio_minutes`: STT audio heard or TTS audio made, per minute;
- `session_minutes`: a realtime connection's time, per minute.

livekit counts cached and audio tokens inside `input_tokens` (and audio inside
`output_tokens`); a rate for the narrower kind prices those tokens and the wider rate prices
the rest, so a token is never paid twice. The offline model and voice cost nothing. A model
with no price is reported as unpriced, never as free.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

from pydantic import Field

from config.strict import StrictModel

RateKey = Literal[
    "input_tokens",
    "cached_input_tokens",
    "input_audio_tokens",
    "cached_input_audio_tokens",
    "output_tokens",
    "output_audio_tokens",
    "characters",
    "audio_minutes",
    "session_minutes",
]
# Providers of the offline model and voice (agents/offline.py, espeak_tts.py, sphinx_stt.py).
FREE_PROVIDERS = frozenset({"offline", "espeak-ng", "pocketsphinx", "silero"})
PER_MILLION = 1_000_000


class ModelPrice(StrictModel):
    provider: str = Field(default="openai", min_length=1)
    model: str = Field(min_length=1)
    rates: dict[RateKey, Annotated[float, Field(ge=0, allow_inf_nan=False)]] = Field(min_length=1)

    def rate(self, key: RateKey) -> float:
        return self.rates.get(key, 0.0)


class Prices(StrictModel):
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    as_of: dt.date | None = None
    models: tuple[ModelPrice, ...] = ()

    def find(self, provider: str, model: str) -> ModelPrice | None:
        for price in self.models:
            if price.provider == provider and price.model == model:
                return price
        return None


def usage_cost(usage: Mapping[str, Any], prices: Prices) -> float | None:
    """The cost of one model's usage (a livekit `*ModelUsage` as a dict: `type`, `provider`,
    `model` and its counts) in `prices.currency`; 0 for the offline voice; None when the
    model has no price."""
    provider, model = str(usage.get("provider", "")), str(usage.get("model", ""))
    if provider in FREE_PROVIDERS:
        return 0.0
    price = prices.find(provider, model)
    if price is None:
        return None

    def n(key: str) -> float:
        value = usage.get(key, 0)
        return float(value) if isinstance(value, int | float) and value > 0 else 0.0

    tokens = _token_cost(n, price)
    other = (
        n("characters_count") * price.rate("characters") / PER_MILLION
        + n("audio_duration") / 60 * price.rate("audio_minutes")
        + n("session_duration") / 60 * price.rate("session_minutes")
    )
    return round(tokens + other, 9)


def _token_cost(n: Callable[[str], float], price: ModelPrice) -> float:
    """Tokens split so each is priced once: audio apart from text when audio has a rate,
    cached apart from uncached when cached has a rate."""
    has = price.rates.__contains__
    audio_in = n("input_audio_tokens") if has("input_audio_tokens") else 0.0
    cached_audio_in = n("input_cached_audio_tokens") if audio_in else 0.0
    text_in = max(n("input_tokens") - audio_in, 0.0)
    cached_text_in = max(n("input_cached_tokens") - cached_audio_in, 0.0)
    cached_rate = price.rate(
        "cached_input_tokens" if has("cached_input_tokens") else "input_tokens"
    )
    cached_audio_rate = price.rate(
        "cached_input_audio_tokens" if has("cached_input_audio_tokens") else "input_audio_tokens"
    )
    audio_out = n("output_audio_tokens") if has("output_audio_tokens") else 0.0
    text_out = max(n("output_tokens") - audio_out, 0.0)
    total = (
        (text_in - cached_text_in) * price.rate("input_tokens")
        + cached_text_in * cached_rate
        + (audio_in - cached_audio_in) * price.rate("input_audio_tokens")
        + cached_audio_in * cached_audio_rate
        + text_out * price.rate("output_tokens")
        + audio_out * price.rate("output_audio_tokens")
    )
    return total / PER_MILLION
