from __future__ import annotations

import json
from pathlib import Path

import pytest

from config.catalog import Catalog, load_catalog
from config.settings import PROJECT_ROOT

CATALOG_PATH = PROJECT_ROOT / "config" / "catalog.json"
SCENARIOS_DIR = PROJECT_ROOT / "scenarios"


@pytest.fixture
def catalog() -> Catalog:
    return load_catalog(CATALOG_PATH)


@pytest.fixture
def catalog_data() -> dict:
    return json.loads(CATALOG_PATH.read_text())


@pytest.fixture
def scenarios_dir() -> Path:
    return SCENARIOS_DIR
