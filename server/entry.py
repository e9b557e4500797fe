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

        try:
            return config_main(args[2:])
        except BrokenPipeError:  # `memoir config claude-code --hooks | head`: quiet, and success
            quiet_stdout()
            return 0
    from .cli import main as cli_main

    return cli_main(args)


def quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush does not complain about the closed pipe."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
