"""Sales: qualifies leads (BANT) and quotes from the shipped price list, never from memory."""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any

from livekit.agents.llm import ToolError

from agents.persona import PersonaAgent
from agents.tool_args import (
    MAX_NAME_CHARS,
    MAX_SHORT_CHARS,
    enum_schema,
    one_of,
    require_text,
)

BRIEF = """
You handle sales. Find out what the customer needs, their budget, who signs off and when they
want it before you talk price; qualify the lead once you know, and follow its next step.
Prices come only from a quote on the price list; never guess a price or a discount.
"""

AUTHORITIES = ("decision_maker", "influencer", "none")
TIMELINES = ("now", "quarter", "year", "unknown")
Authority = Annotated[str, enum_schema(AUTHORITIES)]
Timeline = Annotated[str, enum_schema(TIMELINES)]

# BANT: each of budget, authority, need and timeline is worth up to 25 points
BUDGET_POINTS = ((1000.0, 25), (250.0, 15), (0.01, 5))  # (monthly budget at least, points)
AUTHORITY_POINTS = {"decision_maker": 25, "influencer": 12, "none": 0}
TIMELINE_POINTS = {"now": 25, "quarter": 18, "year": 8, "unknown": 0}
NEED_POINTS_PRODUCT, NEED_POINTS_OTHER = 25, 15  # a need we sell vs. any stated need
MAX_QUANTITY = 100_000
CENT = Decimal("0.01")


def _norm(text: str) -> str:
    # "Dispatch-Suite", "dispatch suite" and "dispatch-suite" name the same product
    return " ".join(text.casefold().replace("-", " ").split())


def _budget_points(budget: float) -> int:
    return next((pts for floor, pts in BUDGET_POINTS if budget >= floor), 0)


def _next_step(score: int, authority: str) -> tuple[str, str]:
    if score >= 75:
        return "hot", "send a formal quote now"
    if score >= 50:
        who = "" if authority == "decision_maker" else " with the decision maker"
        return "warm", f"book a discovery call{who}"
    return "cold", "send product information and follow up next quarter"


class SalesAgent(PersonaAgent, role="sales", brief=BRIEF):
    def _products(self) -> list[dict[str, Any]]:
        return list(self.room_data.price_list["products"])

    def _product_in(self, text: str) -> dict[str, Any] | None:
        """The product a sku, a name, or a free-text need names, if exactly one."""
        key = _norm(text)
        for p in self._products():
            if key in (_norm(p["sku"]), _norm(p["name"])):
                return p
        named = [p for p in self._products() if _norm(p["name"]) in key or _norm(p["sku"]) in key]
        return named[0] if len(named) == 1 else None

    async def qualify_lead(
        self,
        company: str,
        need: str,
        budget_per_month: float,
        authority: Authority,
        timeline: Timeline,
    ) -> str:
        """Qualify a sales lead (BANT) into a 0-100 score and the next step to take.

        Args:
            company: the customer's company or account
            need: what they want, e.g. "25 Dispatch Suite seats"
            budget_per_month: their monthly budget in USD
            authority: whether the person on the call signs off
            timeline: when they want to buy
        """
        if not math.isfinite(budget_per_month) or budget_per_month < 0:
            raise ToolError(f"budget_per_month must be a number >= 0 (got {budget_per_month!r})")
        args: dict[str, Any] = {
            "company": require_text("company", company, max_len=MAX_NAME_CHARS),
            "need": require_text("need", need, max_len=MAX_SHORT_CHARS),
            "budget_per_month": float(budget_per_month),
            "authority": one_of("authority", authority, AUTHORITIES),
            "timeline": one_of("timeline", timeline, TIMELINES),
        }
        product = self._product_in(args["need"])
        breakdown = {
            "budget": _budget_points(args["budget_per_month"]),
            "authority": AUTHORITY_POINTS[args["authority"]],
            "need": NEED_POINTS_PRODUCT if product else NEED_POINTS_OTHER,
            "timeline": TIMELINE_POINTS[args["timeline"]],
        }
        score = sum(breakdown.values())
        grade, next_step = _next_step(score, args["authority"])
        lead = {
            "lead_id": self.room_data.next_id("LEAD"),
            **args,
            "product": product["sku"] if product else None,
            "score": score,
            "breakdown": breakdown,
            "grade": grade,
            "next_step": next_step,
        }
        return self.record("qualify_lead", args, lead)

    async def quote_price(self, product: str, quantity: int) -> str:
        """Quote a monthly price from the price list, with volume and account-tier discounts.

        Args:
            product: the product's sku or name, e.g. "dispatch-suite" or "Dispatch Suite"
            quantity: how many units (seats, vehicles, agents), at least 1
        """
        item = self._product_in(require_text("product", product, max_len=MAX_NAME_CHARS))
        if item is None:
            known = ", ".join(f"{p['sku']} ({p['name']})" for p in self._products())
            raise ToolError(f"no product {product.strip()!r} on the price list; known: {known}")
        if not 1 <= quantity <= MAX_QUANTITY:
            raise ToolError(f"quantity must be between 1 and {MAX_QUANTITY} (got {quantity})")
        prices = self.room_data.price_list
        volume = max(
            (v for v in prices["volume_discounts"] if v["min_quantity"] <= quantity),
            key=lambda v: v["min_quantity"],
            default={"discount": 0.0},
        )["discount"]
        tier = self.room_data.tenant.tier
        tier_discount = prices.get("tier_discounts", {}).get(tier, 0.0)
        # Decimal so cents round the way a customer checks them by hand
        unit_price = Decimal(str(item["unit_price"]))
        list_total = unit_price * quantity
        factor = (1 - Decimal(str(volume))) * (1 - Decimal(str(tier_discount)))
        total = (list_total * factor).quantize(CENT, ROUND_HALF_UP)
        args = {"product": item["sku"], "quantity": quantity}
        quote = {
            "quote_id": self.room_data.next_id("Q"),
            "sku": item["sku"],
            "product": item["name"],
            "quantity": quantity,
            "unit": item["unit"],
            "currency": prices.get("currency", "USD"),
            "unit_price": float(unit_price),
            "list_total": float(list_total.quantize(CENT)),
            "volume_discount": volume,
            "tier": tier,
            "tier_discount": tier_discount,
            "total_per_month": float(total),
        }
        return self.record("quote_price", args, quote)
