"""Configuration, from environment variables, overridden by CLI flags.

| variable | default | meaning |
|---|---|---|
| MEMOIR_DB | <user data dir>/memoir.db | the SQLite database file (created on first run), or a PostgreSQL database's URL (`postgresql://user:password@host:5432/dbname`; the schema is created on first run) |
| MEMOIR_USER_ID | default | the user a call acts for when it names none (stdio, open HTTP) |
| MEMOIR_SYNCHRONOUS | FULL | SQLite `synchronous`: FULL survives a power cut; NORMAL is faster and survives a crash of memoir but may lose the last writes on power loss |
| MEMOIR_HOST / MEMOIR_PORT | 127.0.0.1 / 8765 | where SSE and streamable HTTP listen |
| MEMOIR_LOG_LEVEL | WARNING | logging on stderr |
| ANTHROPIC_API_KEY | (none) | turns on extract_memories and agentic search through the Anthropic API; without it they use the client's own model (MCP sampling) when the client offers it |
| ANTHROPIC_BASE_URL | the public API | a gateway or proxy (read by the anthropic SDK) |
| MEMOIR_EMBEDDINGS | on | `off` turns semantic and hybrid search off (hybrid then runs keyword and says so) |
| MEMOIR_MODEL | claude-haiku-4-5 | the model for extraction and agentic search |
| MEMOIR_LLM_TIMEOUT | 60 | seconds per model request (retried twice on 429/5xx/timeouts) |
| MEMOIR_EXTRACT_RELATED | 20 | how many related memories the model sees per extraction (bounds its cost) |
| MEMOIR_EXTRACT_MAX_OPERATIONS | 50 | the most operations one extraction may apply |
| MEMOIR_CAPTURE_INSTRUCTIONS | (built in) | replaces what the model is told to capture |
| MEMOIR_ADDITIONAL_INSTRUCTIONS | (none) | added to the model's rules |
| MEMOIR_SECRETS | refuse | credentials in a memory (API keys, private keys, JWTs, passwords, card numbers): `refuse` the write, `redact` them (`[REDACTED kind]`) and keep the rest, or `allow` |
| MEMOIR_TOOLS | all | which tools are offered (as `serve --tools`): names and presets (`all`, `read-only` = search_memories,list_memories, `no-delete` = all but delete_memory and clear_memories), comma-separated |
| MEMOIR_EXTRACT_OPS | add,update,delete,supersede | which operations extract_memories may apply; the others are reported as skipped |
| MEMOIR_EXTRACT_CONFIRM_OVER | 3 | an extraction that would delete or supersede more memories than this asks the user first, when the client supports elicitation (`off`: never asks) |

Access and limits for SSE / streamable HTTP (tokens, Host names, rate, call time, body size,
sessions and streams per token or address, idle expiry): see
`memoir.server.access.AccessSettings`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from platformdirs import user_data_dir

from memoir.memory.backends import is_postgres
from memoir.memory.extraction import EXTRACT_OPS, ExtractionSettings
from memoir.memory.limits import Limits
from memoir.memory.llm import DEFAULT_MODEL
from memoir.memory.secrets import MODES, Mode
from memoir.memory.store import Synchronous

from .access_settings import AccessSettings

Transport = Literal["stdio", "sse", "http"]

DEFAULT_PORT = 8765
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def default_db_path() -> Path:
    return Path(user_data_dir("memoir", appauthor=False)) / "memoir.db"


def database_location(text: str) -> Path | str:
    """`--db` / MEMOIR_DB as given: a PostgreSQL URL stays a string (a Path would fold its `//`),
    anything else is an SQLite file's path."""
    if is_postgres(text):
        return text
    return Path(text).expanduser()


@dataclass(frozen=True)
class Settings:
    db_path: Path | str = field(default_factory=default_db_path)  # a str only for a PostgreSQL URL
    user_id: str = "default"
    synchronous: Synchronous = "FULL"
    transport: Transport = "stdio"
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    log_level: str = "WARNING"
    limits: Limits = field(default_factory=Limits)
    anthropic_api_key: str | None = field(default=None, repr=False)
    anthropic_base_url: str | None = None
    model: str = DEFAULT_MODEL
    llm_timeout: float = 60.0
    embeddings: Literal["on", "off", "hashing"] = "on"  # "hashing": a tiny stand-in model, for tests
    llm_max_retries: int = 2
    extraction: ExtractionSettings = field(default_factory=ExtractionSettings)
    access: AccessSettings = field(default_factory=AccessSettings)
    secrets: Mode = "refuse"
    tools: tuple[str, ...] | None = None  # None: every tool (memoir.tools.select_tools makes the tuple)
    # A bad MEMOIR_PORT fails only what listens (`serve --transport sse|http`), not `memoir list`.
    port_error: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        settings = cls()
        overrides: dict[str, object] = {}
        if env.get("MEMOIR_DB"):
            overrides["db_path"] = database_location(env["MEMOIR_DB"])
        if env.get("MEMOIR_USER_ID"):
            overrides["user_id"] = env["MEMOIR_USER_ID"]
        if env.get("MEMOIR_SYNCHRONOUS"):
            overrides["synchronous"] = env["MEMOIR_SYNCHRONOUS"].upper()
        if env.get("MEMOIR_HOST"):
            overrides["host"] = env["MEMOIR_HOST"]
        if env.get("MEMOIR_PORT"):
            try:
                overrides["port"] = int(env["MEMOIR_PORT"])
            except ValueError:
                overrides["port_error"] = f"MEMOIR_PORT must be a port number 0-65535, not {env['MEMOIR_PORT']!r}"
        if env.get("MEMOIR_LOG_LEVEL"):
            overrides["log_level"] = env["MEMOIR_LOG_LEVEL"].upper()
        if env.get("ANTHROPIC_API_KEY"):
            overrides["anthropic_api_key"] = env["ANTHROPIC_API_KEY"]
        if env.get("ANTHROPIC_BASE_URL"):
            overrides["anthropic_base_url"] = env["ANTHROPIC_BASE_URL"]
        if env.get("MEMOIR_MODEL"):
            overrides["model"] = env["MEMOIR_MODEL"]
        if env.get("MEMOIR_EMBEDDINGS"):
            overrides["embeddings"] = env["MEMOIR_EMBEDDINGS"].strip().lower()
        if env.get("MEMOIR_LLM_TIMEOUT"):
            overrides["llm_timeout"] = float(env["MEMOIR_LLM_TIMEOUT"])
        extraction = settings.extraction
        if env.get("MEMOIR_EXTRACT_RELATED"):
            extraction = replace(extraction, related_k=int(env["MEMOIR_EXTRACT_RELATED"]))
        if env.get("MEMOIR_EXTRACT_MAX_OPERATIONS"):
            extraction = replace(extraction, max_operations=int(env["MEMOIR_EXTRACT_MAX_OPERATIONS"]))
        if env.get("MEMOIR_CAPTURE_INSTRUCTIONS"):
            extraction = replace(extraction, capture_instructions=env["MEMOIR_CAPTURE_INSTRUCTIONS"])
        if env.get("MEMOIR_ADDITIONAL_INSTRUCTIONS"):
            extraction = replace(extraction, additional_instructions=env["MEMOIR_ADDITIONAL_INSTRUCTIONS"])
        if env.get("MEMOIR_EXTRACT_OPS"):
            extraction = replace(extraction, allowed_ops=parse_extract_ops(env["MEMOIR_EXTRACT_OPS"]))
        if env.get("MEMOIR_EXTRACT_CONFIRM_OVER"):
            extraction = replace(extraction, confirm_over=parse_confirm_over(env["MEMOIR_EXTRACT_CONFIRM_OVER"]))
        if env.get("MEMOIR_SECRETS"):
            overrides["secrets"] = env["MEMOIR_SECRETS"].strip().lower()
        if env.get("MEMOIR_TOOLS"):
            overrides["tools"] = parse_tools(env["MEMOIR_TOOLS"])
        overrides["extraction"] = extraction
        overrides["access"] = AccessSettings.from_env(env)
        return replace(settings, **overrides)

    def with_overrides(self, **values: object) -> Settings:
        return replace(self, **{k: v for k, v in values.items() if v is not None})

    def check_log_level(self) -> None:
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"MEMOIR_LOG_LEVEL must be {', '.join(LOG_LEVELS[:-1])} or {LOG_LEVELS[-1]}, not {self.log_level!r}")

    def check(self) -> None:
        """Fail early, with the fix, on settings that cannot work."""
        self.check_log_level()
        self.limits.user_id(self.user_id, "MEMOIR_USER_ID")
        if self.synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"MEMOIR_SYNCHRONOUS must be OFF, NORMAL, FULL or EXTRA, not {self.synchronous!r}")
        if self.embeddings not in ("on", "off", "hashing"):
            raise ValueError(f"MEMOIR_EMBEDDINGS must be 'on' or 'off', not {self.embeddings!r}")
        if not 1 <= self.extraction.related_k <= 200:
            raise ValueError(f"MEMOIR_EXTRACT_RELATED must be 1-200, not {self.extraction.related_k}")
        if not 1 <= self.extraction.max_operations <= 500:
            raise ValueError(f"MEMOIR_EXTRACT_MAX_OPERATIONS must be 1-500, not {self.extraction.max_operations}")
        if self.secrets not in MODES:
            raise ValueError(f"MEMOIR_SECRETS must be refuse, redact or allow, not {self.secrets!r}")
        self.access.check()
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0-65535, not {self.port}")


def parse_tools(spec: str) -> tuple[str, ...]:
    """MEMOIR_TOOLS / --tools: ValueError listing the valid names on an unknown one."""
    from memoir.tools import select_tools  # the tool list belongs to the tools layer

    return select_tools(spec)


def parse_extract_ops(spec: str) -> tuple[str, ...]:
    ops = tuple(dict.fromkeys(part.strip().lower() for part in spec.split(",") if part.strip()))
    unknown = [op for op in ops if op not in EXTRACT_OPS]
    if unknown or not ops:
        raise ValueError(
            f"MEMOIR_EXTRACT_OPS: {'unknown operation ' + ', '.join(map(repr, unknown)) if unknown else 'empty'}; "
            f"valid: {', '.join(EXTRACT_OPS)} (comma-separated)"
        )
    return ops


def parse_confirm_over(value: str) -> int | None:
    value = value.strip().lower()
    if value in ("off", "never", "none"):
        return None
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"MEMOIR_EXTRACT_CONFIRM_OVER must be a whole number >= 0 or 'off', not {value!r}") from None
    if number < 0:
        raise ValueError(f"MEMOIR_EXTRACT_CONFIRM_OVER must be a whole number >= 0 or 'off', not {value!r}")
    return number
