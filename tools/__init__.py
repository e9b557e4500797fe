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
TOOL_NAMES = tuple(module.__name__.rsplit(".", 1)[-1] for module in TOOL_MODULES)

# Named sets for MEMOIR_TOOLS / --tools, like Agno's delete_memories / clear_memories switches.
# extract_memories can delete too: MEMOIR_EXTRACT_OPS says which of its operations may apply.
PRESETS: dict[str, tuple[str, ...]] = {
    "all": TOOL_NAMES,
    "read-only": ("search_memories", "list_memories"),
    "no-delete": tuple(n for n in TOOL_NAMES if n not in ("delete_memory", "clear_memories")),
}


def select_tools(spec: str) -> tuple[str, ...]:
    """The tools a comma-separated list of names and presets offers (in TOOL_NAMES order).

    Raises ValueError, in one line listing the valid names, on an unknown name or an empty list.
    """
    chosen: set[str] = set()
    unknown: list[str] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        if item in PRESETS:
            chosen.update(PRESETS[item])
        elif item in TOOL_NAMES:
            chosen.add(item)
        else:
            unknown.append(item)
    valid = f"valid: {', '.join(TOOL_NAMES)}, or the presets {', '.join(PRESETS)}"
    if unknown:
        raise ValueError(f"MEMOIR_TOOLS / --tools: unknown tool {', '.join(map(repr, unknown))}; {valid}")
    if not chosen:
        raise ValueError(f"MEMOIR_TOOLS / --tools names no tool; {valid}")
    return tuple(n for n in TOOL_NAMES if n in chosen)


def register(server: MCPServer, offered: tuple[str, ...] = TOOL_NAMES) -> None:
    """Add the `offered` tools (all by default) and every resource and prompt to `server`.

    A tool not offered is not registered at all: tools/list does not show it and calling it
    answers "Unknown tool".
    """
    for module in TOOL_MODULES:
        name = module.__name__.rsplit(".", 1)[-1]
        if name not in offered:
            continue
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
