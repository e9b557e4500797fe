"""The `memoir` console script.

`memoir hook ...` runs on every prompt of a host with hooks, and `memoir extract` and
`memoir config claude-code --hooks` need no MCP server: they are sent to server/hooks.py, which
imports neither the MCP SDK nor the Anthropic client until a command needs it. Every other
command goes to server/cli.py.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["hook"], ["extract"]):
        from .hooks import main as hooks_main

        return hooks_main(args)
    if args[:2] == ["config", "claude-code"] and "--hooks" in args:
        from .hooks import config_main

        return config_main(args[2:])
    from .cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
