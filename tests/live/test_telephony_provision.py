"""`python -m workers.telephony sync|list|prune` against a real livekit-server with Redis (the
SIP APIs live there): idempotent, updates what changed, prunes only what it made."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
from livekit import api

from config.settings import PROJECT_ROOT
from tests.conftest import module_env
from tests.live.harness import server_api, unique
from tests.live.phone import TelephonyStack

pytestmark = pytest.mark.live

PASSWORD = "pw-" + unique("s")


def telephony_cli(stack: TelephonyStack, catalog: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "workers.telephony", *args],
        cwd=PROJECT_ROOT,
        env=module_env(
            LIVEKIT_URL=stack.url,
            LIVEKIT_API_KEY="devkey",
            LIVEKIT_API_SECRET="secret",
            CATALOG_PATH=str(catalog),
            AGENT_NAME="provision-test",
            ACME_SIP_PASSWORD=PASSWORD,
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )


def write_catalog(path: Path, extra_numbers: list[str] | None) -> Path:
    data = json.loads((PROJECT_ROOT / "config" / "catalog.json").read_text())
    tel = copy.deepcopy(data["telephony"])
    tel["outbound"][0].update(auth_username="acme", auth_password_env="ACME_SIP_PASSWORD")
    if extra_numbers is not None:
        tel["inbound"].append(
            {"id": "brightcart-sales", "numbers": extra_numbers, "scenario": "inbound_support"}
        )
    data["telephony"] = tel
    path.write_text(json.dumps(data))
    return path


async def test_sync_is_idempotent_updates_and_prunes_only_its_own(
    telephony: TelephonyStack, tmp_path: Path
):
    catalog = write_catalog(tmp_path / "catalog.json", ["+15550100100"])
    async with server_api(telephony.url) as lk:
        foreign = await lk.sip.create_inbound_trunk(
            api.CreateSIPInboundTrunkRequest(
                trunk=api.SIPInboundTrunkInfo(name="someone-else", numbers=["+15550199999"])
            )
        )
        try:
            first = telephony_cli(telephony, catalog, "sync")
            assert first.returncode == 0, first.stderr
            second = telephony_cli(telephony, catalog, "sync")
            assert second.returncode == 0, second.stderr
            assert "nothing to change: the server matches the catalog" in second.stdout
            assert "created" not in second.stdout and "updated" not in second.stdout

            listed = telephony_cli(telephony, catalog, "list").stdout
            assert "* inbound trunk" in listed and "* outbound trunk" in listed
            assert "  inbound trunk  " + foreign.sip_trunk_id in listed  # not ours: no mark
            assert "provision-test" in listed and '"inbound": true' in listed

            # the server holds what the catalog says, the password from the environment
            out = (await lk.sip.list_outbound_trunk(api.ListSIPOutboundTrunkRequest())).items
            ours = [t for t in out if t.name == "acme-dispatch-out"]
            assert len(ours) == 1 and ours[0].auth_password == PASSWORD
            rules = (await lk.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())).items
            sales_rule = next(r for r in rules if r.name == "brightcart-sales")
            assert sales_rule.room_config.agents[0].agent_name == "provision-test"

            write_catalog(catalog, ["+15550100101"])  # a number changed
            changed = telephony_cli(telephony, catalog, "sync")
            assert "updated   inbound trunk  brightcart-sales" in changed.stdout
            assert changed.stdout.count("updated") == 1, changed.stdout

            write_catalog(catalog, None)  # the line is gone from the catalog
            pruned = telephony_cli(telephony, catalog, "prune")
            assert pruned.returncode == 0, pruned.stderr
            assert "deleted   dispatch rule  brightcart-sales" in pruned.stdout
            assert "deleted   inbound trunk  brightcart-sales" in pruned.stdout
            assert pruned.stdout.count("deleted") == 2, pruned.stdout
            again = telephony_cli(telephony, catalog, "prune")
            assert "nothing to prune" in again.stdout
            for run in (first, second, changed, pruned, again):
                assert PASSWORD not in run.stdout + run.stderr
            trunks = (await lk.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())).items
            assert foreign.sip_trunk_id in {t.sip_trunk_id for t in trunks}
        finally:
            await lk.sip.delete_trunk(api.DeleteSIPTrunkRequest(sip_trunk_id=foreign.sip_trunk_id))
