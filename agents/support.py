"""Support: answers from the shipped knowledge base and opens tickets for what it cannot fix."""

from __future__ import annotations

import re
from typing import Annotated, Any

from livekit.agents.llm import ToolError

from agents.persona import PersonaAgent
from agents.tool_args import (
    MAX_ID_CHARS,
    MAX_NAME_CHARS,
    as_output,
    enum_schema,
    one_of,
    optional_text,
    require_text,
)

BRIEF = """
You handle customer support. Search the knowledge base before you answer a question, answer
from what it says, and open a ticket for anything you cannot solve on the call. Read ticket
numbers back to the caller. Upgrades and new purchases belong to sales.
"""

SEVERITIES = ("low", "normal", "high", "urgent")
Severity = Annotated[str, enum_schema(SEVERITIES)]
MAX_RESULTS = 10
MAX_QUERY_CHARS = 300  # a few keywords, not a pasted document
MAX_SUMMARY_CHARS = 1000  # one or two sentences with the numbers that matter
# where a query word is found: a tag says more than a title, a title more than the body
TAG_POINTS, TITLE_POINTS, BODY_POINTS = 3, 2, 1
STOP_WORDS = frozenset(
    "a an and are can do does for from how i in is it my of on or the to what when where "
    "why with you your me we our".split()
)


def _terms(text: str) -> set[str]:
    """Lower-case words minus stop words, plural 's' dropped: "Items" matches "item"."""
    words = re.findall(r"[a-z0-9]+", text.casefold())
    return {w[:-1] if len(w) > 3 and w.endswith("s") else w for w in words} - STOP_WORDS


def _score(query: set[str], article: dict[str, Any]) -> int:
    tags = _terms(" ".join(article.get("tags", ())))
    title = _terms(article.get("title", ""))
    body = _terms(article.get("body", ""))
    return sum(
        (TAG_POINTS if t in tags else 0)
        + (TITLE_POINTS if t in title else 0)
        + (BODY_POINTS if t in body else 0)
        for t in query
    )


class SupportAgent(PersonaAgent, role="support", brief=BRIEF):
    async def search_knowledge_base(self, query: str, limit: int = 3) -> str:
        """Search the help articles; returns the best matches first.

        Args:
            query: a few keywords describing the problem, e.g. "damaged item replacement"
            limit: how many articles to return, 1 to 10
        """
        text = require_text("query", query, max_len=MAX_QUERY_CHARS)
        if not 1 <= limit <= MAX_RESULTS:
            raise ToolError(f"limit must be between 1 and {MAX_RESULTS} (got {limit})")
        terms = _terms(text)
        if not terms:
            raise ToolError(f"query {text!r} has no keywords; name the problem in a few words")
        scored = [(_score(terms, a), a) for a in self.room_data.knowledge_base]
        ranked = sorted((s for s in scored if s[0] > 0), key=lambda s: (-s[0], s[1]["id"]))
        matches = [
            {"id": a["id"], "title": a["title"], "score": score, "body": a["body"]}
            for score, a in ranked[:limit]
        ]
        result: dict[str, Any] = {"query": text, "matches": matches}
        if not matches:
            result["note"] = "no article matches; open a ticket if you cannot help on the call"
        return as_output(result)

    async def open_ticket(self, summary: str, severity: Severity, customer: str = "") -> str:
        """Open a support ticket for a problem that cannot be solved on the call.

        Args:
            summary: the problem in one or two sentences, with order or account numbers
            severity: how bad it is for the customer
            customer: the customer's name or account, if known
        """
        args = {
            "summary": require_text("summary", summary, max_len=MAX_SUMMARY_CHARS),
            "severity": one_of("severity", severity, SEVERITIES),
            "customer": optional_text("customer", customer, max_len=MAX_NAME_CHARS),
        }
        ticket = {
            "ticket_id": self.room_data.next_id("TKT"),
            **args,
            "status": "open",
            "opened_by": self.persona.id,
        }
        self.room_data.tickets[ticket["ticket_id"]] = ticket
        return self.record("open_ticket", args, ticket)

    async def lookup_ticket(self, ticket_id: str) -> str:
        """Look a ticket up by its id.

        Args:
            ticket_id: the ticket id, e.g. TKT-0001
        """
        ticket = self.room_data.find_ticket(
            require_text("ticket_id", ticket_id, max_len=MAX_ID_CHARS)
        )
        if ticket is None:
            known = ", ".join(self.room_data.tickets) or "none opened yet in this call"
            raise ToolError(f"no ticket {ticket_id.strip()!r}; tickets: {known}")
        return as_output(ticket)
