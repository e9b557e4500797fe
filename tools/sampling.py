"""Asking the client's own model (MCP sampling), in both protocol eras.

Tools that need an LLM and have no API key configured declare resolvers that return `Sample`:
the SDK then asks the client to sample, awaiting it on handshake-era connections and through
extra input rounds on 2026-07-28 ones. In the latter, resolvers run again every round, so the
prompt they build must come out the same each time (no clocks, stable ordering).
"""

from __future__ import annotations

from typing import Any

import mcp.types as types
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import Sample

from memoir.memory.llm import LLMBadOutput, NO_PROVIDER_MESSAGE, ToolSpec, flatten_messages, json_tool_system
from memoir.memory.llm import tool_input_from_text as _tool_input_from_text

from .context import AppContext


def needs_sampling(app: AppContext, ctx: Context) -> bool:
    """True when the call must use the client's model; a clear error when there is no model at all."""
    if app.llm is not None:
        return False
    capabilities = ctx.client_capabilities
    if capabilities is None or capabilities.sampling is None:
        raise ToolError(NO_PROVIDER_MESSAGE)
    return True


def sample(system: str, messages: list[dict[str, Any]], tool: ToolSpec, max_tokens: int) -> Sample:
    """A sampling request asking for `tool`'s input as a JSON object."""
    return Sample(
        [
            types.SamplingMessage(role=m["role"], content=types.TextContent(type="text", text=m["content"]))
            for m in flatten_messages(messages)
            if m["role"] in ("user", "assistant")
        ],
        max_tokens=max_tokens,
        system_prompt=json_tool_system(system, tool),
    )


def sampled_text(result: types.CreateMessageResult) -> str:
    content = result.content
    if isinstance(content, types.TextContent):
        return content.text
    return ""


def tool_input(result: types.CreateMessageResult, tool: ToolSpec) -> tuple[dict[str, Any] | None, str]:
    """The JSON object the client's model gave (None if it gave none) and its raw text."""
    text = sampled_text(result)
    try:
        return _tool_input_from_text(text, tool), text
    except LLMBadOutput:
        return None, text
