"""A catalog with human agents for the desk's tests: the shipped catalog plus the humans given
(each a dict of HumanAgent fields; `phone` defaults to a distinct number)."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import Any

from config.catalog import Catalog, parse_catalog
from config.settings import PROJECT_ROOT

CATALOG_PATH = PROJECT_ROOT / "config" / "catalog.json"
ACME = "acme-logistics"
BRIGHT = "brightcart"


def human(id: str, tenant: str = BRIGHT, **fields: Any) -> dict[str, Any]:
    number = 201 + sum(map(ord, id)) % 700
    phone = f"+1555010{number:04d}"
    return {"id": id, "tenant": tenant, "name": id.title(), "phone": phone} | fields


def humans_catalog(
    humans: Sequence[dict[str, Any]], contacts: Sequence[dict[str, Any]] = ()
) -> Catalog:
    data = copy.deepcopy(json.loads(CATALOG_PATH.read_text()))
    data["human_agents"] = list(humans)
    data["contact_assignments"] = list(contacts)
    return parse_catalog(json.dumps(data))
