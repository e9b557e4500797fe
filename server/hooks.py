"""Memory without tool calls: `memoir extract` and the host hooks (`memoir hook ...`).

Claude Code (and other hosts with hooks) runs a command at session start, on every prompt and
when the agent stops, hands it a JSON object on stdin (`session_id`, `transcript_path`, `cwd`,
`hook_event_name`, and `prompt` for UserPromptSubmit), and adds what a SessionStart or
UserPromptSubmit hook prints (exit 0) to the model's context.

- `hook session-start` prints the user's memories most worth knowing: the most recalled
  (by `user-prompt`, below) and the newest, alternately, within `MEMOIR_HOOK_TOKENS` (600).
- `hook user-prompt` prints the memories relevant to the prompt: the default search (hybrid
  with embeddings on), with the relevance floor when the search has one, within the budget.
  Each memory it prints has its recall counted (the usage signal session-start reads).
- `hook stop` hands the exchange the agent just finished to a detached worker and returns at
  once. The worker takes the session's lock (one extraction per session at a time), reads the
  transcript lines after the session's cursor, extracts from them, and only then advances the
  cursor: a crash redoes the lines, never loses them. History records `claude-code session <id>`
  as the source of what it extracted.

A hook never fails the host: any error ends it with exit 0, no output, and one line in the hook
log (`MEMOIR_HOOK_LOG`, default `<user data dir>/hooks.log`, kept under 256 KB plus one old
file).

Start-up is what a person feels on every prompt, so this module imports only the standard
library at the top: the store, the embedding model and the LLM client are imported by the
command that needs them, and never the MCP SDK (server/entry.py reaches here without loading
server/cli.py).

Side tables (schema migration 8; memory ids only, no text): `hook_recalls` (memory_id ->
recalls, last recalled; rows go with their memory: ON DELETE CASCADE) and `hook_sessions`
(session_id -> transcript lines already extracted; `memoir purge` removes a user's).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

DEFAULT_HOOK_TOKENS = 600
LOG_MAX_BYTES = 256 * 1024
# Per message of a transcript: an assistant's long answer (code, logs) says little about the user.
ASSISTANT_MAX_CHARS = 2_000
USER_MAX_CHARS = 8_000
SESSION_SOURCE = "claude-code session {}"
EVENTS = ("session-start", "user-prompt", "stop")



class HookError(Exception):
    """A hook cannot do its work; the message says why (it goes to the hook log)."""


# -- the log -----------------------------------------------------------------------------------


def log_path() -> Path:
    if os.environ.get("MEMOIR_HOOK_LOG"):
        return Path(os.environ["MEMOIR_HOOK_LOG"]).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("memoir", appauthor=False)) / "hooks.log"


def log(line: str) -> None:
    """One line in the hook log; the log is rotated at LOG_MAX_BYTES. Never raises."""
    try:
        path = log_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if path.stat().st_size > LOG_MAX_BYTES:
                path.replace(path.with_name(path.name + ".1"))
        except FileNotFoundError:
            pass
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with path.open("a", encoding="utf-8") as out:
            out.write(f"{stamp} [{os.getpid()}] {' '.join(line.split())}\n")
    except Exception:  # noqa: BLE001 - the log is best effort; a hook must not fail for it
        pass


# -- transcripts -------------------------------------------------------------------------------


def _text(content: Any) -> str:
    """A message's text: a string, or the `text` blocks of a list (tool calls, tool results and
    thinking are left out)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            b["text"] for b in content if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        )
    return ""


def entry_message(entry: Any) -> tuple[str, str] | None:
    """(role, text) of one transcript entry, or None when it is not a message worth reading.

    Claude Code's entries: `{"type": "user" | "assistant", "message": {"role", "content"}, ...}`;
    other types (summaries, system notes), meta entries and sub-agent (sidechain) entries are
    ignored. A plain `{"role", "content"}` is accepted too.
    """
    if not isinstance(entry, dict):
        return None
    if "type" in entry:
        if entry.get("type") not in ("user", "assistant") or entry.get("isMeta") or entry.get("isSidechain"):
            return None
        entry = entry.get("message")
        if not isinstance(entry, dict):
            return None
    role = entry.get("role")
    if role not in ("user", "assistant", "system"):
        return None
    text = _text(entry.get("content")).strip()
    if not text:
        return None
    most = ASSISTANT_MAX_CHARS if role == "assistant" else USER_MAX_CHARS
    if len(text) > most:
        text = text[:most] + " [...]"
    return role, text


def parse_transcript(text: str, name: str = "the transcript") -> list[tuple[str, str]]:
    """The messages of a transcript: Claude Code's JSON Lines, or a JSON list of {role, content}.

    Raises HookError (one line, with the fix) when it is neither.
    """
    stripped = text.strip()
    if not stripped:
        raise HookError(f"{name} is empty; give Claude Code's JSON Lines or a JSON list of {{role, content}}")
    if stripped.startswith("["):
        try:
            items = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise HookError(f"{name} is not valid JSON ({exc}); give a JSON list of {{role, content}}") from None
        return [m for m in map(entry_message, items) if m is not None]
    messages = []
    for number, line in enumerate(stripped.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            raise HookError(
                f"{name} line {number} is not JSON; give Claude Code's JSON Lines (one JSON object a line) "
                "or a JSON list of {role, content}"
            ) from None
        message = entry_message(entry)
        if message is not None:
            messages.append(message)
    return messages


def complete_lines(path: Path) -> list[str]:
    """The transcript's lines that are complete (end with a newline): the host may be appending."""
    data = path.read_bytes()
    end = data.rfind(b"\n")
    if end < 0:
        return []
    return data[: end + 1].decode("utf-8", "replace").splitlines()


def line_message(line: str) -> tuple[str, str] | None:
    try:
        return entry_message(json.loads(line))
    except json.JSONDecodeError:
        return None


# -- settings and the store --------------------------------------------------------------------


def load_settings(db: str | None, user: str | None):
    from .settings import Settings

    try:
        from .settings import database_location

        settings = Settings.from_env().with_overrides(db_path=database_location(db) if db else None, user_id=user)
    except ValueError as exc:
        raise HookError(f"a MEMOIR_* environment variable is invalid: {exc}") from None
    settings.check()
    return settings


def hook_tokens() -> int:
    raw = os.environ.get("MEMOIR_HOOK_TOKENS", "").strip()
    if not raw:
        return DEFAULT_HOOK_TOKENS
    try:
        value = int(raw)
    except ValueError:
        raise HookError(f"MEMOIR_HOOK_TOKENS must be a whole number of tokens (default {DEFAULT_HOOK_TOKENS}), not {raw!r}") from None
    if not 1 <= value <= 100_000:
        raise HookError(f"MEMOIR_HOOK_TOKENS must be 1 to 100000 (default {DEFAULT_HOOK_TOKENS}), not {value}")
    return value


async def open_store(settings, *, create: bool = False):
    from memoir.memory.secrets import SecretsPolicy
    from memoir.memory.store import Store

    from memoir.memory.backends import is_postgres

    if not create and str(settings.db_path) != ":memory:" and not is_postgres(settings.db_path) and not Path(settings.db_path).exists():
        return None  # nothing remembered yet: a hook does not create the database
    return await Store.open(
        settings.db_path, limits=settings.limits, synchronous=settings.synchronous,
        secrets=SecretsPolicy(settings.secrets),
    )


@asynccontextmanager
async def extraction_app(settings) -> AsyncIterator[tuple[Any, Any, Any]]:
    """The store, an Extractor over the default retrieval, and the Anthropic provider - without
    the MCP SDK (server/app.py builds the same for the server)."""
    from memoir.memory.extraction import Extractor
    from memoir.memory.llm import NO_PROVIDER_MESSAGE, AnthropicProvider
    from memoir.memory.retrieval import Retriever

    if not settings.anthropic_api_key:
        raise HookError(NO_PROVIDER_MESSAGE)
    store = await open_store(settings, create=True)
    vectors = None
    llm = AnthropicProvider(
        settings.anthropic_api_key, model=settings.model, base_url=settings.anthropic_base_url,
        timeout=settings.llm_timeout, max_retries=settings.llm_max_retries,
    )
    try:
        if settings.embeddings != "off":
            from memoir.memory.embeddings import load_embedder
            from memoir.memory.vectors import VectorIndex

            kind = "hashing" if settings.embeddings == "hashing" else "default"
            vectors = VectorIndex(store, lambda: load_embedder(kind))
        yield store, Extractor(Retriever(store, vectors), settings.extraction), llm
    finally:
        if vectors is not None:
            await vectors.close()
        await llm.aclose()
        await store.close()


# -- what the hooks print ----------------------------------------------------------------------


def context_block(title: str, memories: Sequence[Any]) -> str:
    lines = [f"<memoir-memories>", title]
    lines += [f"- {m.memory}" for m in memories]
    lines.append("</memoir-memories>")
    return "\n".join(lines)


def _current(memory: Any) -> bool:
    return getattr(memory, "valid_to", None) is None


async def most_recalled(store, user_id: str, limit: int) -> list[Any]:
    rows = await store.fetch(
        "SELECT memory_id FROM hook_recalls WHERE user_id = ? ORDER BY recalls DESC, last_recalled_at DESC LIMIT ?",
        (user_id, limit),
    )
    return [m for m in await store.scored(user_id, [(r["memory_id"], 0.0) for r in rows]) if _current(m)]


async def count_recalls(store, user_id: str, memory_ids: Sequence[str]) -> None:
    """One small transaction: each id's recall count + 1 (the usage signal for session-start)."""
    if not memory_ids:
        return
    from memoir.memory.limits import now

    stamp = now()
    async with store.transaction() as db:
        await db.executemany(
            "INSERT INTO hook_recalls (memory_id, user_id, recalls, last_recalled_at) VALUES (?, ?, 1, ?) "
            "ON CONFLICT (memory_id) DO UPDATE SET recalls = hook_recalls.recalls + 1, last_recalled_at = excluded.last_recalled_at",
            [(m, user_id, stamp) for m in memory_ids],
        )


def _interleave(*lists: Sequence[Any]) -> list[Any]:
    seen: set[str] = set()
    out = []
    for group in zip(*(list(x) + [None] * (max(map(len, lists)) - len(x)) for x in lists)):
        for m in group:
            if m is not None and m.memory_id not in seen:
                seen.add(m.memory_id)
                out.append(m)
    return out


async def session_start(settings, event: dict[str, Any]) -> str:
    from memoir.memory.budget import fit

    budget = hook_tokens()
    store = await open_store(settings)
    if store is None:
        return ""
    try:
        recalled = await most_recalled(store, settings.user_id, 30)
        newest = await store.by_time(settings.user_id, newest_first=True, limit=30)
    finally:
        await store.close()
    kept, _, _ = fit(_interleave(recalled, newest), budget)
    if not kept:
        return ""
    return context_block(
        "What memoir remembers about the user (long-term memory from earlier sessions; the most recalled "
        "and the newest). Use it where it helps; do not mention it unprompted.",
        kept,
    )


def prefetch_embedder(embeddings: str) -> None:
    """Load the embedding model in a thread while the main thread imports the rest and opens the
    store: the model is the slowest part of `user-prompt`, and much of its load is native code."""
    if embeddings not in ("on", "hashing"):
        return
    import threading

    def load() -> None:
        try:
            from memoir.memory.embeddings import load_embedder

            load_embedder("hashing" if embeddings == "hashing" else "default")
        except Exception:  # noqa: BLE001 - the search loads it again and reports the error
            pass

    threading.Thread(target=load, daemon=True).start()


def make_retriever(settings, store) -> Any:
    from memoir.memory.retrieval import Retriever

    vectors = None
    if settings.embeddings != "off":
        from memoir.memory.embeddings import load_embedder
        from memoir.memory.vectors import VectorIndex

        kind = "hashing" if settings.embeddings == "hashing" else "default"
        vectors = VectorIndex(store, lambda: load_embedder(kind))
    return Retriever(store, vectors)


async def relevant(settings, retriever, user_id: str, query: str, budget: int) -> list[Any]:
    """The default search for `query` (hybrid with embeddings, else keyword) with its default
    relevance floor (memory/ranking.py), within `budget` tokens."""
    from memoir.memory.budget import fit

    query = query[-retriever.store.limits.query_max_chars:]
    outcome = await retriever.search(user_id, query, limit=10)  # with the default relevance floor
    results = [m for m in outcome.results if _current(m)]
    kept, _, _ = fit(results, budget)
    return kept


async def recall(settings, retriever, user_id: str, prompt: str, budget: int) -> str:
    """What user-prompt prints for `prompt` (cold or warm), with the recalls counted."""
    kept = await relevant(settings, retriever, user_id, prompt, budget)
    if not kept:
        return ""
    try:
        await count_recalls(retriever.store, user_id, [m.memory_id for m in kept])
    except Exception as exc:  # noqa: BLE001 - the usage signal is not worth losing the answer for
        log(f"user-prompt: recall count not saved: {exc}")
    return context_block(
        "Memories about the user that may be relevant to this prompt (memoir, long-term memory):", kept
    )


async def user_prompt(settings, event: dict[str, Any]) -> str:
    prompt = event.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return ""
    budget = hook_tokens()
    store = await open_store(settings)
    if store is None:
        return ""
    retriever = make_retriever(settings, store)
    try:
        return await recall(settings, retriever, settings.user_id, prompt, budget)
    finally:
        if retriever.vectors is not None:
            await retriever.vectors.close()
        await store.close()


# -- the warm recall server -------------------------------------------------------------------------
#
# A cold `user-prompt` pays for Python's imports (~0.25 s of CPU) and the embedding model's load
# (~0.2 s) on every prompt. After its first cold run, the hook starts a small server in the
# background (detached) that keeps the store, the model and the user's vectors loaded and
# listens on a Unix socket beside the database (`<db>.hooks/recall.sock`, in a 0700 folder);
# the next hooks ask it and import nothing but `json` and `socket`. It exits after
# MEMOIR_HOOK_WARM_IDLE seconds without a question (default 1800), and answers only hooks
# whose settings match its own (else they run cold, and it exits). MEMOIR_HOOK_WARM=off: always
# cold, no background process.


def _location(text: str) -> Path | str:
    """As settings.database_location, without importing it (the fast path imports little)."""
    return text if text.startswith(("postgresql://", "postgres://")) else Path(text).expanduser()


def _data_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("memoir", appauthor=False))


def default_db() -> Path | str:
    if os.environ.get("MEMOIR_DB"):
        return _location(os.environ["MEMOIR_DB"])
    return _data_dir() / "memoir.db"


def warm_enabled() -> bool:
    return os.environ.get("MEMOIR_HOOK_WARM", "on").strip().lower() not in ("off", "0", "no", "false")


def hooks_dir(db_path: Path | str) -> Path:
    """Per-database state of the hooks (the warm server's socket, session locks): beside an SQLite
    file; for a PostgreSQL database, in the user's data directory, named by a hash of its URL."""
    if isinstance(db_path, str) and db_path.startswith(("postgresql://", "postgres://")):
        import hashlib

        return _data_dir() / f"postgresql-{hashlib.sha256(db_path.encode()).hexdigest()[:16]}.hooks"
    db = Path(db_path).expanduser().absolute()
    return db.with_name(db.name + ".hooks")


def warm_socket(db_path: Path | str) -> Path:
    return hooks_dir(db_path) / "recall.sock"


def warm_fingerprint(db_path: Path) -> str:
    """What a warm server must share with the hook asking it: the memoir version, the database
    and the settings that change an answer."""
    import memoir

    keys = ("MEMOIR_EMBEDDINGS", "MEMOIR_SECRETS", "MEMOIR_SYNCHRONOUS", "MEMOIR_MIN_RELEVANCE", "MEMOIR_EMBEDDING_MODEL_PATH")
    where = db_path if isinstance(db_path, str) and "://" in db_path else str(Path(db_path).expanduser().absolute())
    return json.dumps([memoir.__version__, where, [os.environ.get(k, "") for k in keys]])


def ask_warm(db_path: Path, user_id: str, prompt: str, budget: int, timeout: float = 5.0) -> str | None:
    """The warm server's answer, or None when none is up (or it is not for these settings)."""
    import socket

    path = warm_socket(db_path)
    if len(str(path)) > 100:  # AF_UNIX path limit
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(timeout)
    try:
        try:
            conn.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            return None
        request = {"fingerprint": warm_fingerprint(db_path), "user_id": user_id, "prompt": prompt, "budget": budget}
        conn.sendall(json.dumps(request).encode() + b"\n")
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    finally:
        conn.close()
    reply = json.loads(b"".join(chunks) or b"{}")
    if "error" in reply:
        raise HookError(f"warm recall server: {reply['error']}")
    return reply.get("out")


def start_warm(db: str | None, user: str | None) -> None:
    import subprocess

    args = [sys.executable, "-m", "memoir.server.hooks", "recall-server"]
    if db:
        args += ["--db", db]
    subprocess.Popen(  # noqa: S603
        args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True,
    )


def warm_idle() -> float:
    try:
        return max(1.0, float(os.environ.get("MEMOIR_HOOK_WARM_IDLE", "1800")))
    except ValueError:
        return 1800.0


def recall_server(argv: Sequence[str]) -> int:
    import fcntl

    parser = argparse.ArgumentParser(prog="memoir-recall-server")
    parser.add_argument("--db")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.db, None)
        path = warm_socket(settings.db_path)
        private_dir(path.parent)
        lock = open(path.with_name("recall.lock"), "a+")  # noqa: SIM115 - held for the server's life
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # another one is up
        _run(_serve_recall(settings, path))
        return 0
    except Exception as exc:  # noqa: BLE001 - detached: the log is the only place to say it
        log(f"recall server: {type(exc).__name__}: {exc}")
        return 1


async def _serve_recall(settings, path: Path) -> None:
    import asyncio

    store = await open_store(settings)
    if store is None:
        return
    retriever = make_retriever(settings, store)
    fingerprint = warm_fingerprint(settings.db_path)
    last = time.monotonic()
    stop_serving = asyncio.Event()
    idle = warm_idle()

    async def answer(reader: Any, writer: Any) -> None:
        nonlocal last
        last = time.monotonic()
        try:
            request = json.loads(await reader.readline())
            if request.get("fingerprint") != fingerprint:
                reply: dict[str, Any] = {"out": None}
                stop_serving.set()  # settings or version changed: make way for a new server
            else:
                user_id = store.limits.user_id(request["user_id"], "MEMOIR_USER_ID")
                out = await recall(settings, retriever, user_id, request["prompt"], int(request["budget"]))
                reply = {"out": out}
        except Exception as exc:  # noqa: BLE001 - the hook logs it and prints nothing
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        try:
            writer.write(json.dumps(reply).encode())
            await writer.drain()
        finally:
            writer.close()
        last = time.monotonic()

    try:
        if retriever.vectors is not None:
            await retriever.vectors.embedder()  # load the model now, not on the first question
        path.unlink(missing_ok=True)
        server = await asyncio.start_unix_server(answer, path=str(path))
        os.chmod(path, 0o600)
        log(f"recall server: up on {path}")
        async with server:
            while not stop_serving.is_set() and time.monotonic() - last < idle:
                try:
                    await asyncio.wait_for(stop_serving.wait(), timeout=min(5.0, idle))
                except asyncio.TimeoutError:
                    pass
    finally:
        path.unlink(missing_ok=True)
        if retriever.vectors is not None:
            await retriever.vectors.close()
        await store.close()


# -- stop: extraction in the background -------------------------------------------------------


def private_dir(path: Path) -> None:
    """The hooks' state folder: created if need be, readable by its owner only (it holds the socket)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def state_dir(settings) -> Path:
    """Per-database state (session locks): next to the database file."""
    return hooks_dir(settings.db_path)


def session_lock_path(settings, session_id: str) -> Path:
    import hashlib

    digest = hashlib.sha256(session_id.encode()).hexdigest()[:32]
    return state_dir(settings) / f"{digest}.lock"


def check_session(event: dict[str, Any]) -> tuple[str, Path]:
    session_id = event.get("session_id")
    transcript = event.get("transcript_path")
    if not isinstance(session_id, str) or not session_id.strip() or len(session_id) > 256:
        raise HookError("stop: the host's JSON has no session_id")
    if not isinstance(transcript, str) or not transcript:
        raise HookError(f"stop: the host's JSON has no transcript_path (session {session_id})")
    path = Path(transcript).expanduser()
    if not path.is_file():
        raise HookError(f"stop: transcript {path} does not exist (session {session_id})")
    return session_id, path


def stop(event: dict[str, Any], db: str | None, user: str | None) -> None:
    """Hand the session to a detached worker; return at once.

    Reads no settings module (it imports pydantic and numpy, ~0.25 s): the worker reads them
    and logs what is wrong with them.
    """
    import subprocess

    session_id, transcript = check_session(event)
    if not os.environ.get("ANTHROPIC_API_KEY"):
        raise HookError(f"stop: no model for extraction: set ANTHROPIC_API_KEY for the hook (session {session_id})")
    args = [sys.executable, "-m", "memoir.server.hooks", "worker", "--session", session_id, "--transcript", str(transcript)]
    if db:
        args += ["--db", db]
    if user:
        args += ["--user", user]
    subprocess.Popen(  # noqa: S603 - our own interpreter and module
        args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True,
    )


async def read_cursor(store, session_id: str) -> int:
    rows = await store.fetch("SELECT lines FROM hook_sessions WHERE session_id = ?", (session_id,))
    return int(rows[0]["lines"]) if rows else 0


async def save_cursor(store, session_id: str, user_id: str, transcript: Path, lines: int) -> None:
    from memoir.memory.limits import now

    async with store.transaction() as db:
        await db.execute(
            "INSERT INTO hook_sessions (session_id, user_id, transcript, lines, updated_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (session_id) DO UPDATE SET lines = excluded.lines, transcript = excluded.transcript, "
            "updated_at = excluded.updated_at",
            (session_id, user_id, str(transcript), lines, now()),
        )


def batches(lines: Sequence[str], start: int, max_count: int, max_chars: int) -> Iterable[tuple[int, list[tuple[str, str]]]]:
    """(end line, messages) groups of the lines after `start`, each within the extraction limits."""
    group: list[tuple[str, str]] = []
    chars = 0
    for index in range(start, len(lines)):
        message = line_message(lines[index])
        if message is not None:
            if group and (len(group) >= max_count or chars + len(message[1]) > max_chars):
                yield index, group
                group, chars = [], 0
            group.append(message)
            chars += len(message[1])
    yield len(lines), group


async def extract_session(settings, session_id: str, transcript: Path) -> int:
    """Extract from the lines after the session's cursor; returns how many operations were applied.

    The cursor moves past a group of lines only once that group's extraction committed.
    """
    from memoir.memory.extraction import Message

    applied = 0
    async with extraction_app(settings) as (store, extractor, llm):
        while True:  # the host may append while this runs: read again until nothing is new
            start = await read_cursor(store, session_id)
            lines = complete_lines(transcript)
            if len(lines) <= start:
                return applied
            limits = store.limits
            for end, group in batches(lines, start, limits.messages_max_count, limits.messages_max_chars):
                has_user = any(role == "user" for role, _ in group)
                if has_user:
                    result = await extractor.extract(
                        settings.user_id, [Message(role, text) for role, text in group], llm,  # type: ignore[arg-type]
                        origin=SESSION_SOURCE.format(session_id),
                    )
                    applied += len(result.operations)
                    log(
                        f"stop: session {session_id}: lines {start + 1}-{end}: {len(result.operations)} operations"
                        + (f", {len(result.skipped)} skipped" if result.skipped else "")
                    )
                await save_cursor(store, session_id, settings.user_id, transcript, end)
                start = end


def worker(argv: Sequence[str]) -> int:
    """The detached process `hook stop` starts: one extraction per session at a time (a lock file)."""
    import fcntl

    parser = argparse.ArgumentParser(prog="memoir-hook-worker")
    parser.add_argument("--session", required=True)
    parser.add_argument("--transcript", required=True)
    parser.add_argument("--db")
    parser.add_argument("--user")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.db, args.user)
        lock_path = session_lock_path(settings, args.session)
        private_dir(lock_path.parent)
        with open(lock_path, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # waits for this session's running extraction, then reads on from its cursor
            applied = _run(extract_session(settings, args.session, Path(args.transcript)))
        log(f"stop: session {args.session}: done, {applied} operations")
        return 0
    except Exception as exc:  # noqa: BLE001 - detached: the log is the only place to say it
        log(f"stop: session {args.session}: extraction failed, the next stop retries: {type(exc).__name__}: {exc}")
        return 1


# -- commands ------------------------------------------------------------------------------------


def _run(coro) -> Any:
    import asyncio

    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def _prompt(event: dict[str, Any]) -> bool:
    return isinstance(event.get("prompt"), str) and bool(event["prompt"].strip())


def run_hook(event_name: str, db: str | None, user: str | None, stdin: IO[str] | None = None) -> int:
    """`memoir hook EVENT`: always exit 0; output only on success; errors go to the hook log."""
    started = time.perf_counter()
    out = ""
    try:
        raw = (stdin or sys.stdin).read()
        try:
            event = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as exc:
            raise HookError(f"the host's JSON on stdin is invalid: {exc}") from None
        if not isinstance(event, dict):
            raise HookError("the host's JSON on stdin is not an object")
        if event_name == "stop":
            stop(event, db, user)
        elif event_name == "user-prompt" and warm_enabled() and _prompt(event):
            db_path = _location(db) if db else default_db()
            user_id = user or os.environ.get("MEMOIR_USER_ID") or "default"
            out = ask_warm(db_path, user_id, event["prompt"], hook_tokens())
            how = "warm"
            if out is None:  # no warm server up: answer cold, then start one for the next prompt
                how = "cold"
                prefetch_embedder(os.environ.get("MEMOIR_EMBEDDINGS", "on").strip().lower())
                out = _run(user_prompt(load_settings(db, user), event))
                if isinstance(db_path, str) or db_path.exists():
                    start_warm(db, user)
            if os.environ.get("MEMOIR_HOOK_TRACE"):
                log(f"{event_name}: answered {how}")
        else:
            if event_name == "user-prompt" and _prompt(event):
                prefetch_embedder(os.environ.get("MEMOIR_EMBEDDINGS", "on").strip().lower())
            settings = load_settings(db, user)
            if event_name == "session-start":
                out = _run(session_start(settings, event))
            else:
                out = _run(user_prompt(settings, event))
        if os.environ.get("MEMOIR_HOOK_TRACE"):
            log(f"{event_name}: ok in {1000 * (time.perf_counter() - started):.0f} ms, {len(out)} characters")
    except BaseException as exc:  # noqa: BLE001 - a hook never fails the host's prompt
        if isinstance(exc, KeyboardInterrupt):
            return 0
        log(f"{event_name}: {type(exc).__name__}: {exc}")
        return 0
    if out:
        sys.stdout.write(out + "\n")
        sys.stdout.flush()
    return 0


# -- `memoir extract` ------------------------------------------------------------------------


def read_messages(args: argparse.Namespace) -> list[tuple[str, str]]:
    given = [x for x in (args.message, args.transcript, args.stdin) if x is not None]
    if len(given) != 1:
        raise HookError("give exactly one of --message TEXT, --transcript FILE, or - (a transcript on stdin)")
    if args.stdin == "-":
        args.transcript = "-"
    if args.message is not None:
        return [("user", args.message)]
    if args.transcript == "-":
        return parse_transcript(sys.stdin.read(), "stdin")
    path = Path(args.transcript).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise HookError(f"cannot read the transcript {path}: {exc.strerror or exc}") from None
    return parse_transcript(text, str(path))


async def extract_command(settings, args: argparse.Namespace) -> int:
    from memoir.memory.extraction import Message
    from memoir.memory.llm import NO_PROVIDER_MESSAGE

    messages = read_messages(args)
    if not messages:
        raise HookError("the transcript has no user or assistant messages with text; nothing to extract")
    if not settings.anthropic_api_key:
        raise HookError(NO_PROVIDER_MESSAGE)
    async with extraction_app(settings) as (_, extractor, llm):
        result = await extractor.extract(
            settings.user_id, [Message(r, t) for r, t in messages], llm, dry_run=args.dry_run  # type: ignore[arg-type]
        )
    print(json.dumps(result.model_dump(), indent=2, ensure_ascii=False))
    return 0


def run_extract(args: argparse.Namespace) -> int:
    import sqlite3

    from memoir.memory.errors import MemoirError

    try:
        settings = load_settings(args.db, args.user)
        return _run(extract_command(settings, args))
    except KeyboardInterrupt:
        return 130
    except (HookError, MemoirError, ValueError, OSError) as exc:
        print(f"memoir: {exc}", file=sys.stderr)
        return 1
    except sqlite3.Error as exc:
        print(f"memoir: cannot use the database: {exc}", file=sys.stderr)
        return 1


# -- argument parsing (also registered in server/cli.py, for `memoir --help`) -------------------


def add_parsers(sub: Any, common: argparse.ArgumentParser, user: argparse.ArgumentParser) -> None:
    extract = sub.add_parser(
        "extract", parents=[common, user],
        help="let the model decide what to remember from a message or a transcript (as extract_memories)",
    )
    extract.add_argument("--message", metavar="TEXT", help="one message from the user")
    extract.add_argument("--transcript", metavar="FILE",
                         help="Claude Code's JSON Lines transcript, or a JSON list of {role, content} ('-': stdin)")
    extract.add_argument("stdin", nargs="?", choices=["-"], help="'-': read the transcript from stdin")
    extract.add_argument("--dry-run", action="store_true", help="only print the operations, apply nothing")
    extract.set_defaults(sync_run=run_extract)

    hook = sub.add_parser(
        "hook", parents=[common, user],
        help="host hooks (Claude Code): session-start, user-prompt, stop; read the host's JSON on stdin",
    )
    hook.add_argument("event", choices=EVENTS, help="session-start: print memories worth knowing; user-prompt: "
                      "print memories relevant to the prompt; stop: extract from the exchange in the background")
    hook.set_defaults(sync_run=lambda args: run_hook(args.event, args.db, args.user))


def parser() -> argparse.ArgumentParser:
    import memoir

    top = argparse.ArgumentParser(prog="memoir")
    top.add_argument("--version", action="version", version=f"memoir {memoir.__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", help="SQLite database file (env MEMOIR_DB; default: the user data directory)")
    user = argparse.ArgumentParser(add_help=False)
    user.add_argument("--user", help="user id (env MEMOIR_USER_ID; default 'default')")
    add_parsers(top.add_subparsers(dest="command", metavar="COMMAND"), common, user)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["worker"]:
        return worker(argv[1:])
    if argv[:1] == ["recall-server"]:
        return recall_server(argv[1:])
    args = parser().parse_args(argv)
    code = args.sync_run(args)
    if args.command == "hook":
        # Done: the store is closed and the output flushed. Skipping the interpreter's teardown
        # saves tens of milliseconds per prompt, and never waits on (or tears down under) a model
        # still loading in the prefetch thread when the hook had nothing to search.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())


# -- `memoir config claude-code --hooks` ------------------------------------------------------------


def memoir_command() -> list[str]:
    """The absolute command that runs memoir: the console script next to this interpreter, else
    this interpreter with `-m memoir.server.entry`."""
    script = Path(sys.executable).with_name("memoir")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script.absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "memoir.server.entry"]


def claude_code_hooks(db_path: Path, user_id: str | None = None) -> dict[str, Any]:
    """The `hooks` block of Claude Code's settings.json, with absolute paths."""
    import shlex

    base = [*memoir_command(), "hook"]

    def command(event: str) -> str:
        where = db_path if isinstance(db_path, str) and "://" in db_path else str(Path(db_path).expanduser().absolute())
        parts = [*base, event, "--db", where]
        if user_id:
            parts += ["--user", user_id]
        return shlex.join(parts)

    return {
        "hooks": {
            "SessionStart": [{"hooks": [{"type": "command", "command": command("session-start"), "timeout": 10}]}],
            "UserPromptSubmit": [{"hooks": [{"type": "command", "command": command("user-prompt"), "timeout": 10}]}],
            "Stop": [{"hooks": [{"type": "command", "command": command("stop"), "timeout": 10}]}],
        }
    }


def config_main(argv: Sequence[str]) -> int:
    config = argparse.ArgumentParser(
        prog="memoir config claude-code",
        description="print the `hooks` block for Claude Code's settings.json (~/.claude/settings.json)",
    )
    config.add_argument("--hooks", action="store_true", required=True, help="the hooks block (SessionStart, "
                        "UserPromptSubmit, Stop), with absolute paths")
    config.add_argument("--db", help="SQLite database file (env MEMOIR_DB; default: the user data directory)")
    config.add_argument("--user", help="user id (env MEMOIR_USER_ID; default 'default')")
    args = config.parse_args(list(argv))
    try:
        settings = load_settings(args.db, args.user)
    except (HookError, ValueError) as exc:
        print(f"memoir: {exc}", file=sys.stderr)
        return 1
    user = args.user or os.environ.get("MEMOIR_USER_ID")
    print(json.dumps(claude_code_hooks(settings.db_path, user), indent=2))
    return 0
