from __future__ import annotations

import json
from pathlib import Path

import pytest

from config.catalog import Catalog, load_catalog
from config.settings import PROJECT_ROOT, Settings, get_settings

CATALOG_PATH = PROJECT_ROOT / "config" / "catalog.json"
SCENARIOS_DIR = PROJECT_ROOT / "scenarios"


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch, tmp_path):
    """No test reads the developer's settings: every setting (keys included) is removed from
    the environment unless the test sets it, each test runs in its own empty directory (so
    Settings' `.env` is the test's own, if it writes one) and get_settings() forgets what an
    earlier test read."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def catalog() -> Catalog:
    return load_catalog(CATALOG_PATH)


@pytest.fixture
def catalog_data() -> dict:
    return json.loads(CATALOG_PATH.read_text())


@pytest.fixture
def scenarios_dir() -> Path:
    return SCENARIOS_DIR
