"""The MCP surface: one module per tool, plus resources and guidance. Thin adapters over memoir.memory."""

from __future__ import annotations

import inspect

from mcp.server.mcpserver import MCPServer

from . import (
    add_memory,
    clear_memories,
    delete_memory,
    extract_memories,
    guidance,
    list_memories,
    resources,
    search_memories,
    update_memory,
)
from .context import tool_errors
from .guard import guarded, guarded_resource

TOOL_MODULES = (
    add_memory,
    update_memory,
    delete_memory,
    search_memories,
    extract_memories,
    list_memories,
    clear_memories,
)


def register(server: MCPServer) -> None:
    """Add every tool, resource and prompt to `server`."""
    for module in TOOL_MODULES:
        name = module.__name__.rsplit(".", 1)[-1]
        handler = getattr(module, name)
        server.add_tool(
            tool_errors(guarded(handler)),
            name=name,
            # The docstring is what the calling model reads: without the source's indentation.
            description=inspect.cleandoc(handler.__doc__ or ""),
            annotations=module.ANNOTATIONS,
        )
    server.resource("memoir://users/{user_id}/memories{?as_of,include_superseded}", mime_type="application/json")(
        guarded_resource(resources.user_memories)
    )
    server.resource("memoir://memories/{memory_id}", mime_type="application/json")(guarded_resource(resources.memory))
    server.resource("memoir://memories/{memory_id}/history", mime_type="application/json")(
        guarded_resource(resources.memory_history)
    )
    server.prompt(name="remember", title="Remember the user")(guidance.remember)
