"""Small assertions shared by the tests."""

from __future__ import annotations

from mcp import Client

# Every tool the server must offer.
TOOLS = {
    "add_memory",
    "update_memory",
    "delete_memory",
    "search_memories",
    "extract_memories",
    "list_memories",
    "clear_memories",
}


async def call(client: Client, tool: str, **arguments: object) -> dict:
    """Call a tool that must succeed; return its structured result."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content[0].text
    assert result.structured_content is not None
    return result.structured_content


async def call_error(client: Client, tool: str, **arguments: object) -> str:
    """Call a tool that must fail with a tool error; return the error text."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, f"{tool} should have failed: {result.structured_content}"
    text = result.content[0].text
    assert "Traceback" not in text
    return text
