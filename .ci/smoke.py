"""Smoke test of an installed memoir (the wheel, in a fresh venv), run by .ci/run with that venv's python.

Checks the install layout, then over a real stdio subprocess (`memoir serve`), in both protocol
eras: list the tools, add a memory, find it by keyword. Prints what it sees; exits non-zero on failure.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import sysconfig
import tempfile
from pathlib import Path

from mcp import Client, StdioServerParameters

CORE_TOOLS = {"add_memory", "update_memory", "delete_memory", "search_memories", "list_memories", "clear_memories"}


def check_layout() -> None:
    import memoir
    import memoir.memory.store
    import memoir.server.cli
    import memoir.tools

    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    where = Path(memoir.__file__).resolve()
    print(f"memoir {memoir.__version__} imported from {where}")
    assert site in where.parents, f"memoir should come from the wheel in {site}, not {where}"
    for bare in ("server", "tools", "memory"):  # installed names live under `memoir` only
        assert importlib.util.find_spec(bare) is None, f"a bare top-level `{bare}` package is installed"


async def round_trip(db: Path, mode: str) -> None:
    memoir = Path(sys.executable).with_name("memoir")
    params = StdioServerParameters(command=str(memoir), args=["serve"], env={"MEMOIR_DB": str(db)})
    async with Client(params, mode=mode) as client:
        info = client.server_info
        print(f"[{mode}] protocol {client.protocol_version}, server {info.name} {info.version}")
        names = sorted(tool.name for tool in (await client.list_tools()).tools)
        print(f"[{mode}] tools: {', '.join(names)}")
        assert CORE_TOOLS <= set(names), names
        added = await client.call_tool("add_memory", {"memory": f"Ava likes to ski ({mode})", "topics": ["hobbies"]})
        assert not added.is_error, added.content
        memory = added.structured_content
        print(f"[{mode}] add_memory -> {memory}")
        found = await client.call_tool(
            "search_memories", {"query": "ski", "retrieval_method": "keyword", "limit": 5}
        )
        assert not found.is_error, found.content
        results = found.structured_content["results"]
        print(f"[{mode}] search_memories(query='ski') -> {[(r['memory_id'], r['memory']) for r in results]}")
        assert memory["memory_id"] in {r["memory_id"] for r in results}


async def main() -> None:
    check_layout()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "smoke.db"
        for mode in ("legacy", "auto"):
            await round_trip(db, mode)
    print("smoke test passed")


if __name__ == "__main__":
    asyncio.run(main())
