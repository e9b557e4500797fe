"""What the CLI shows a person at a terminal: tables and progress bars (rich), and the TTY tests.

A command prints a table when its standard output is a terminal and `--json` was not given;
otherwise (a pipe, a file, `--json`) it prints the JSON it always has, so scripts see no change.
Progress bars go to standard error, and only when it is a terminal.

rich is imported here, on first use, never by `memoir.server.cli` at start-up: a command whose
output is piped (hooks, scripts) does not pay for it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from typing import Any


def is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def wants_table(json_flag: bool) -> bool:
    return not json_flag and is_terminal(sys.stdout)


def _console(stderr: bool = False):  # -> rich.console.Console
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def age(stamp: str | None, now: datetime | None = None) -> str:
    """'just now', '5m', '3h', '2d', '4mo', '1y' since an ISO-8601 UTC time."""
    if not stamp:
        return ""
    try:
        then = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    if then.tzinfo is None:
        then = then.replace(tzinfo=timezone.utc)
    seconds = ((now or datetime.now(timezone.utc)) - then).total_seconds()
    if seconds < 60:
        return "just now"
    for unit, size in (("y", 365 * 86400), ("mo", 30 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return "just now"


def _memory_table(title: str | None, scores: bool = False):
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_lines=False, expand=False)
    table.add_column("id", style="cyan", no_wrap=True)
    table.add_column("memory", overflow="fold", ratio=1)
    table.add_column("topics", style="green")
    table.add_column("age", style="dim", no_wrap=True)
    if scores:
        # relevance: comparable across queries (0-1, what min_relevance filters on); score: the
        # method's own ordering number.
        table.add_column("relevance", justify="right", no_wrap=True)
        table.add_column("score", justify="right", no_wrap=True, style="dim")
    return table


def _row(memory: Any) -> list[str]:
    text = _escape(memory.memory) + (" [dim](superseded)[/dim]" if getattr(memory, "valid_to", None) else "")
    return [memory.memory_id, text, _escape(", ".join(memory.topics)), age(memory.created_at)]


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def print_memories(memories: Sequence[Any], *, user_id: str, next_cursor: str | None = None) -> None:
    console = _console()
    if not memories:
        console.print(f"no memories for user '{user_id}'")
        return
    table = _memory_table(f"memories of '{user_id}' (newest first)")
    for memory in memories:
        table.add_row(*_row(memory))
    console.print(table)
    if next_cursor:
        console.print(f"more: memoir list --user {user_id} --cursor {next_cursor}", style="dim")


def print_search(result: dict[str, Any], *, user_id: str, query: str | None) -> None:
    console = _console()
    results = result["results"]
    method = result["retrieval_method"]
    if not results:
        console.print(f"nothing found for {query!r} ({method})" if query else f"no memories for user '{user_id}'")
        return
    table = _memory_table(f"{len(results)} result(s) for {query!r} ({method})" if query else f"({method})", scores=True)
    for memory in results:
        relevance = getattr(memory, "relevance", None)
        # Three significant digits: BM25 in a store of a few memories scores around 1e-6, which
        # three decimals showed as 0.000 beside a relevance of 1.00.
        table.add_row(*_row(memory), "-" if relevance is None else f"{relevance:.2f}", f"{memory.score:.3g}")
    console.print(table)
    if result.get("truncated_by_budget"):
        console.print(f"cut at the token budget ({result['tokens']} tokens)", style="dim")


def print_memory(memory: Any) -> None:
    from rich.table import Table

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in memory.model_dump().items():
        if value is None or value == []:
            continue
        shown = ", ".join(value) if isinstance(value, list) else str(value)
        if key in ("created_at", "updated_at"):
            shown += f"  ({age(value)})"
        table.add_row(key, _escape(shown))
    _console().print(table)


def _what(event: Any) -> str:
    state = event.after or event.before
    return _escape(state.memory) if state is not None else ""


def print_events(events: Sequence[Any], *, title: str, show_memory_id: bool = False) -> None:
    from rich.table import Table

    console = _console()
    if not events:
        console.print("no recorded changes")
        return
    table = Table(title=title, title_justify="left")
    table.add_column("event", style="cyan", justify="right", no_wrap=True)
    table.add_column("when", style="dim", no_wrap=True)
    table.add_column("change", no_wrap=True)
    if show_memory_id:
        table.add_column("memory id", no_wrap=True)
    table.add_column("memory", overflow="fold", ratio=1)
    table.add_column("by", no_wrap=True)
    for event in events:
        change = event.operation + (f" (undoes {event.undoes})" if event.undoes else "")
        cells = [str(event.event_id), age(event.created_at), change]
        if show_memory_id:
            cells.append(event.memory_id)
        cells += [_what(event), event.actor]
        table.add_row(*cells)
    console.print(table)


def print_log(events: Sequence[Any], *, user_id: str) -> None:
    """A user's recent changes, newest first; the events of one clear shown as one line."""
    from types import SimpleNamespace

    shown: list[Any] = []
    clears: dict[str, Any] = {}
    for event in events:
        if event.operation == "clear":
            seen = clears.get(event.created_at)
            if seen is not None:
                seen.count += 1
                continue
            line = SimpleNamespace(**{k: getattr(event, k) for k in ("event_id", "created_at", "actor", "undoes", "memory_id")},
                                   operation="clear", before=event.before, after=None, count=1)
            clears[event.created_at] = line
            shown.append(line)
        else:
            shown.append(event)
    for line in clears.values():
        if line.count > 1:
            line.before = SimpleNamespace(memory=f"{line.count} memories (memoir undo --clear {line.event_id})")
    print_events(shown, title=f"recent changes of '{user_id}' (newest first; undo one with `memoir undo EVENT`)",
                 show_memory_id=True)


def print_users(users: Sequence[dict[str, Any]]) -> None:
    from rich.table import Table

    console = _console()
    if not users:
        console.print("no users yet")
        return
    table = Table(title="users", title_justify="left")
    table.add_column("user", style="cyan")
    table.add_column("memories", justify="right")
    table.add_column("last change", style="dim")
    for user in users:
        table.add_row(_escape(user["user_id"]), str(user["memories"]), age(user["last_change"]))
    console.print(table)


class _NoProgress:
    def advance(self, amount: int = 1) -> None:
        pass

    def step(self, done: int, total: int) -> None:
        pass


class _Bar:
    def __init__(self, progress: Any, task: Any) -> None:
        self._progress, self._task = progress, task

    def advance(self, amount: int = 1) -> None:
        self._progress.advance(self._task, amount)

    def step(self, done: int, total: int) -> None:
        """`done` of `total` so far: the callback shape of long work (reindex, backup)."""
        self._progress.update(self._task, completed=done, total=total)


@contextlib.contextmanager
def progress(description: str, total: int | None = None) -> Iterator[_Bar | _NoProgress]:
    """A progress bar on standard error when it is a terminal; otherwise nothing."""
    if not is_terminal(sys.stderr):
        yield _NoProgress()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=_console(stderr=True), transient=False,
    ) as bar:
        yield _Bar(bar, bar.add_task(description, total=total))
