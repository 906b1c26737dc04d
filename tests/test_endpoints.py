"""Which OpenAI-compatible server each persona's plugins talk to, with which key; the log
names hosts and variables, never a key. Construction only: no connection is opened."""

from __future__ import annotations

import copy
import json

import pytest
from livekit.plugins import openai

from agents.endpoints import endpoint_for
from agents.fallback import chain
from agents.models import build_models, build_text_models, room_models, room_models_choice
from agents.offline import OfflineLLM
from config.catalog import CatalogError, Persona, PipelineModels, parse_catalog
from config.settings import Settings, describe_settings_error
from tests.fakes import cast_of, scenario_for

KEY = "sk-endpoint-test-key-0123456789"
LOCAL_KEY = "local-key-9876543210"
LOCAL = "http://127.0.0.1:11434/v1"


def _with_model(persona: Persona, **model: object) -> Persona:
    return persona.model_copy(update={"model": persona.model.model_copy(update=model)})


def _urls(models) -> dict[str, str]:
    """The base URL each plugin object of `models` will call."""
    out: dict[str, str] = {}
    for kind in ("llm", "tts", "stt"):
        obj = chain(getattr(models, kind))[0]
        if obj is None:
            continue
        if isinstance(obj, openai.realtime.RealtimeModel):
            out["realtime"] = obj._opts.base_url
        else:
            out[kind] = str(obj._client.base_url)
    return out


def _keys(models) -> set[str | None]:
    keys = set()
    for kind in ("llm", "tts", "stt"):
        obj = chain(getattr(models, kind))[0]
        if isinstance(obj, openai.realtime.RealtimeModel):
            keys.add(obj._opts.api_key)
        elif obj is not None:
            keys.add(obj._client.api_key)
    return keys


def test_openai_base_url_reaches_every_plugin_of_both_modes(catalog) -> None:
    settings = Settings(_env_file=None, openai_api_key=KEY, openai_base_url=LOCAL)
    pipeline = build_models(catalog.persona("dana"), settings, vad=object())  # type: ignore[arg-type]
    assert _urls(pipeline) == {"llm": f"{LOCAL}/", "tts": f"{LOCAL}/", "stt": f"{LOCAL}/"}
    realtime = build_models(catalog.persona("tim"), settings)
    assert _urls(realtime) == {"realtime": LOCAL}
    text = build_text_models(catalog.persona("tim"), settings)
    assert _urls(text) == {"llm": f"{LOCAL}/"}
    assert _keys(pipeline) == _keys(realtime) == _keys(text) == {KEY}


def test_without_a_base_url_the_plugins_call_openai(catalog) -> None:
    settings = Settings(_env_file=None, openai_api_key=KEY)
    assert _urls(build_models(catalog.persona("dana"), settings, vad=object())) == {  # type: ignore[arg-type]
        kind: "https://api.openai.com/v1/" for kind in ("llm", "tts", "stt")
    }
    assert _urls(build_models(catalog.persona("tim"), settings)) == {
        "realtime": "https://api.openai.com/v1"
    }


def test_a_persona_server_and_key_variable_win(catalog, monkeypatch) -> None:
    monkeypatch.setenv("LOCAL_LLM_KEY", LOCAL_KEY)
    settings = Settings(_env_file=None, openai_api_key=KEY, openai_base_url="https://gw.test/v1")
    dana = _with_model(catalog.persona("dana"), base_url=LOCAL, api_key_env="LOCAL_LLM_KEY")
    models = build_models(dana, settings, vad=object())  # type: ignore[arg-type]
    assert set(_urls(models).values()) == {f"{LOCAL}/"}
    assert _keys(models) == {LOCAL_KEY}
    tim = _with_model(catalog.persona("tim"), base_url=LOCAL, api_key_env="LOCAL_LLM_KEY")
    assert _urls(build_models(tim, settings)) == {"realtime": LOCAL}
    # the other personas keep the process's server and key
    assert _keys(build_models(catalog.persona("chris"), settings)) == {KEY}


def test_a_persona_key_variable_is_read_from_dotenv_too(catalog, tmp_path) -> None:
    (tmp_path / ".env").write_text(f"LOCAL_LLM_KEY={LOCAL_KEY}\n")  # cwd is tmp_path
    tim = _with_model(catalog.persona("tim"), base_url=LOCAL, api_key_env="LOCAL_LLM_KEY")
    endpoint = endpoint_for(tim, Settings())
    assert endpoint is not None and endpoint.key.get_secret_value() == LOCAL_KEY
    assert endpoint.key_env == "LOCAL_LLM_KEY" and LOCAL_KEY not in repr(endpoint)


def test_a_persona_whose_key_is_unset_speaks_offline_and_the_error_names_the_variable(
    catalog,
) -> None:
    settings = Settings(_env_file=None, openai_api_key=KEY)
    cast = cast_of(catalog, "tim", "chris")
    scenario = scenario_for("freight-dispatch", *cast)
    names = {role: p.name for role, p in cast.items()}
    tim = _with_model(catalog.persona("tim"), base_url=LOCAL, api_key_env="TIM_SERVER_KEY")
    models = room_models(tim, scenario, names, hears_humans=False, vad=None, settings=settings)
    assert isinstance(models.llm, OfflineLLM)
    with pytest.raises(ValueError, match="TIM_SERVER_KEY is not set: persona 'tim'"):
        build_models(tim, settings)
    chris = room_models(
        catalog.persona("chris"), scenario, names, hears_humans=False, vad=None, settings=settings
    )
    assert isinstance(chris.llm, openai.realtime.RealtimeModel)
    choice = room_models_choice([tim, catalog.persona("chris")], settings)
    assert choice == {
        "models": "openai+offline",
        "voice": "catalog voices",
        "endpoints": "api.openai.com",
        "offline_personas": "tim",
    }


def test_the_logged_choice_names_hosts_never_keys_or_credentials(catalog, monkeypatch) -> None:
    monkeypatch.setenv("LOCAL_LLM_KEY", LOCAL_KEY)
    settings = Settings(
        _env_file=None, openai_api_key=KEY, openai_base_url="https://user:pw@gw.example.test/v1"
    )
    tim = _with_model(catalog.persona("tim"), base_url=LOCAL, api_key_env="LOCAL_LLM_KEY")
    choice = room_models_choice([tim, catalog.persona("chris")], settings)
    assert choice["endpoints"] == "127.0.0.1:11434,gw.example.test"
    text = json.dumps(choice)
    assert KEY not in text and LOCAL_KEY not in text and "pw" not in text


def test_a_bad_base_url_setting_is_named_without_its_value() -> None:
    with pytest.raises(Exception) as info:
        Settings(_env_file=None, openai_base_url="localhost:11434/v1")
    message = describe_settings_error(info.value)
    assert message.startswith("OPENAI_BASE_URL: value error, must be an http:// or https://")
    assert "localhost:11434" not in message


def test_catalog_checks_the_persona_server_fields(catalog_data) -> None:
    data = copy.deepcopy(catalog_data)
    model = data["personas"][0]["model"]  # tim, realtime
    model.update(base_url="ftp://x", api_key_env="MY KEY")
    with pytest.raises(CatalogError) as info:
        parse_catalog(json.dumps(data), "cat.json")
    text = str(info.value)
    assert "cat.json" in text and "$.personas[0].model.base_url" in text
    assert "$.personas[0].model.api_key_env" in text


def test_a_persona_on_its_own_server_may_name_that_server_models(catalog_data) -> None:
    data = copy.deepcopy(catalog_data)
    dana = next(p for p in data["personas"] if p["id"] == "dana")
    dana["model"].update(llm="llama3.2:3b", stt="whisper-large-v3", tts="kokoro")
    with pytest.raises(CatalogError, match=r"unknown LLM 'llama3.2:3b'"):
        parse_catalog(json.dumps(data))
    dana["model"].update(base_url=LOCAL, api_key_env="OLLAMA_KEY")
    parsed = parse_catalog(json.dumps(data)).persona("dana")
    assert (parsed.model.llm, parsed.model.base_url) == ("llama3.2:3b", LOCAL)


def test_model_connection_options_default_to_livekits() -> None:
    from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS

    from agents.fallback import conn_options

    assert conn_options(Settings(_env_file=None)) == DEFAULT_API_CONNECT_OPTIONS


def test_a_fallback_is_checked_and_refused_on_a_realtime_persona(catalog_data) -> None:
    data = copy.deepcopy(catalog_data)
    by_id = {p["id"]: p for p in data["personas"]}
    by_id["tim"]["model"]["fallback"] = {"llm": "gpt-4.1-mini"}  # tim is realtime
    by_id["dana"]["model"]["fallback"] = {"llm": "llama3.2:3b"}  # not an OpenAI model
    with pytest.raises(CatalogError) as info:
        parse_catalog(json.dumps(data), "cat.json")
    text = str(info.value)
    assert "model.fallback: a realtime persona cannot have a fallback" in text
    assert "model.fallback.llm: unknown LLM 'llama3.2:3b'" in text
    by_id["tim"]["model"].pop("fallback")
    by_id["dana"]["model"]["fallback"].update(base_url=LOCAL, api_key_env="OLLAMA_KEY")
    dana = parse_catalog(json.dumps(data)).persona("dana")
    assert dana.model.fallback is not None and dana.model.fallback.llm == "llama3.2:3b"


def test_a_pipeline_falls_back_to_its_catalog_fallback_then_the_offline_voice(
    catalog, monkeypatch
) -> None:
    from agents.espeak_tts import EspeakTTS
    from agents.fallback import ApologyLLM, chain

    monkeypatch.setenv("LOCAL_LLM_KEY", LOCAL_KEY)
    assert catalog.persona("dana").model.fallback is None
    dana = _with_model(
        catalog.persona("dana"),
        fallback=PipelineModels(llm="llama3.2:3b", base_url=LOCAL, api_key_env="LOCAL_LLM_KEY"),
    )
    settings = Settings(_env_file=None, openai_api_key=KEY)
    models = build_models(dana, settings, vad=object())  # type: ignore[arg-type]
    own, second, apology = chain(models.llm)
    assert (own.model, second.model) == ("gpt-4.1-mini", "llama3.2:3b")
    assert str(second._client.base_url) == f"{LOCAL}/" and second._client.api_key == LOCAL_KEY
    assert isinstance(apology, ApologyLLM)
    assert isinstance(chain(models.tts)[-1], EspeakTTS) and len(chain(models.tts)) == 3
    assert len(chain(models.stt)) == 2
    # a fallback whose key is not set is left out, not an error
    monkeypatch.delenv("LOCAL_LLM_KEY")
    assert len(chain(build_models(dana, settings, vad=object()).llm)) == 2  # type: ignore[arg-type]
