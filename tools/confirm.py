"""Asking the human before a destructive change, through MCP elicitation, in both protocol eras.

Tools declare a resolver that returns `Elicit` (or None when there is nothing to ask): on
2025-11-25 connections the SDK sends `elicitation/create` mid-call; on 2026-07-28 ones it answers
the call with an input request and the client calls again with the answer (resolvers then run
again, so the question they build must come out the same). Clients that did not declare
elicitation are never asked: for them the tools' own rules (confirm: true) are all there is.
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.resolve import AcceptedElicitation
from pydantic import BaseModel, Field


class Confirmation(BaseModel):
    confirm: bool = Field(description="Yes, go ahead.")


def can_ask(ctx: Context) -> bool:
    """The client declared form elicitation (a bare `elicitation: {}` counts, as in the SDK)."""
    capabilities = ctx.client_capabilities
    elicitation = capabilities.elicitation if capabilities is not None else None
    return elicitation is not None and (elicitation.form is not None or elicitation.url is None)


def answer(outcome: Any) -> str | None:
    """None when the user said yes (or was not asked); otherwise what they did, for the result."""
    if isinstance(outcome, AcceptedElicitation):
        if isinstance(outcome.data, Confirmation) and not outcome.data.confirm:
            return "the user answered no when asked"
        return None
    return f"the user {_past(outcome.action)} when asked"


def _past(action: str) -> str:
    return {"decline": "declined", "cancel": "cancelled"}.get(action, action)
