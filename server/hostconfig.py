"""`memoir config HOST`: the snippet that adds this memoir to an MCP host, with absolute paths.

A host spawns `memoir serve` with its own PATH, which rarely holds a virtual environment's
`bin` (the README's Quick Start venv is not on it: `spawn memoir ENOENT`). So the snippet names
this very `memoir` by its absolute path: the console script next to the running Python, or the
Python itself with `-m memoir.server.cli` where there is no console script.
"""

from __future__ import annotations

import json
import platform
import shlex
import sys
from pathlib import Path

HOSTS = {
    "claude-desktop": "Claude Desktop",
    "claude-code": "Claude Code",
    "cursor": "Cursor",
    "vscode": "VS Code",
}


def memoir_command() -> list[str]:
    """The absolute command line that runs this memoir."""
    script = Path(sys.executable).with_name("memoir.exe" if sys.platform == "win32" else "memoir")
    if script.exists():
        return [str(script.absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "memoir.server.cli"]


def _claude_desktop_config_file() -> str:
    system = platform.system()
    if system == "Darwin":
        return "~/Library/Application Support/Claude/claude_desktop_config.json"
    if system == "Windows":
        return r"%APPDATA%\Claude\claude_desktop_config.json"
    return "~/.config/Claude/claude_desktop_config.json"


def server_entry(db: Path | None = None) -> dict[str, object]:
    command, *args = memoir_command()
    entry: dict[str, object] = {"command": command, "args": [*args, "serve"]}
    if db is not None:
        entry["env"] = {"MEMOIR_DB": str(db)}
    return entry


def snippet(host: str, *, db: Path | None = None) -> str:
    """What to paste (or run) for `host`, with a comment line saying where."""
    entry = server_entry(db)
    if host == "claude-code":
        env = f" -e MEMOIR_DB={shlex.quote(str(db))}" if db is not None else ""
        command = " ".join(shlex.quote(part) for part in [entry["command"], *entry["args"]])  # type: ignore[list-item]
        return f"# run this in a shell (add --scope user for every project):\nclaude mcp add memoir{env} -- {command}"
    if host == "vscode":
        body = {"servers": {"memoir": {"type": "stdio", **entry}}}
        where = "# in .vscode/mcp.json of the workspace (or MCP: Open User Configuration):"
    elif host == "cursor":
        body = {"mcpServers": {"memoir": entry}}
        where = "# in ~/.cursor/mcp.json (every project) or .cursor/mcp.json (this project):"
    elif host == "claude-desktop":
        body = {"mcpServers": {"memoir": entry}}
        where = f"# in {_claude_desktop_config_file()} (merge into mcpServers if it has some), then restart Claude Desktop:"
    else:  # argparse's choices keep this out of reach
        raise ValueError(f"unknown host {host!r}; one of {', '.join(HOSTS)}")
    return where + "\n" + json.dumps(body, indent=2)
