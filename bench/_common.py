"""Shared helpers for the benchmark scripts (not part of the product, not a test).

- LoCoMo loading with the evidence-id repair described in ../shared/data/README.md;
- the `memoir serve` stdio parameters (the SDK's stdio client spawns it);
- percentiles, the server process's RSS from /proc, progress on stderr.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from mcp import StdioServerParameters

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEMOIR_LOCOMO") or Path(__file__).resolve().parents[2] / "shared/data/locomo-dev.json")

# `python -m memoir.server.cli` works wherever memoir is importable, without the console script on PATH.
MEMOIR = [sys.executable, "-m", "memoir.server.cli"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- LoCoMo ------------------------------------------------------------------------------------


@dataclass
class Turn:
    dia_id: str
    date: str
    speaker: str
    text: str

    @property
    def memory(self) -> str:
        return f"[{self.date}] {self.speaker}: {self.text}"


@dataclass
class Fact:
    """An observation of LoCoMo: one fact a memory manager would store, and the turns it came from."""

    date: str
    text: str
    sources: list[str]  # repaired turn ids

    @property
    def memory(self) -> str:
        return f"[{self.date}] {self.text}"


@dataclass
class Question:
    question: str
    category: int
    evidence: list[str]  # repaired ids that name a turn of the conversation (may be empty)
    raw_evidence: list[str]


@dataclass
class Conversation:
    sample_id: str
    turns: list[Turn] = field(default_factory=list)
    questions: list[Question] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)  # the `observation` field, session by session


_SESSION = re.compile(r"session_(\d+)")
_ID = re.compile(r"^\D*(\d+)\D*:\D*(\d+)\D*$")


def parse_evidence(raw: list[str], known: set[str]) -> list[str]:
    """Split on ';' and spaces, drop non-digits around the colon, strip leading zeros, drop unknown ids."""
    out: list[str] = []
    for item in raw:
        for part in re.split(r"[;\s]+", item):
            m = _ID.match(part)
            if not m:
                continue
            dia_id = f"D{int(m.group(1))}:{int(m.group(2))}"
            if dia_id in known and dia_id not in out:
                out.append(dia_id)
    return out


def load_locomo(path: Path = DATA) -> list[Conversation]:
    if not path.is_file():
        sys.exit(f"LoCoMo data not found at {path}; set MEMOIR_LOCOMO to locomo-dev.json")
    out: list[Conversation] = []
    for sample in json.loads(path.read_text()):
        c = sample["conversation"]
        conv = Conversation(sample["sample_id"])
        sessions = sorted((int(m.group(1)), k) for k in c if (m := _SESSION.fullmatch(k)) and c[k])
        for _, key in sessions:
            date = c.get(f"{key}_date_time", "")
            for t in c[key]:
                conv.turns.append(Turn(t["dia_id"], date, t["speaker"], t["text"]))
        known = {t.dia_id for t in conv.turns}
        observations = sample.get("observation", {})
        for _, key in sessions:
            date = c.get(f"{key}_date_time", "")
            for _speaker, facts in observations.get(f"{key}_observation", {}).items():
                for text, source in facts:
                    raw_ids = source.split(",") if isinstance(source, str) else list(source)
                    conv.facts.append(Fact(date, text, parse_evidence([r.strip() for r in raw_ids], known)))
        for qa in sample["qa"]:
            raw = qa.get("evidence", [])
            conv.questions.append(Question(qa["question"], int(qa["category"]), parse_evidence(raw, known), raw))
        out.append(conv)
    return out


# -- processes -----------------------------------------------------------------------------------


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child server: no MEMOIR_* of the developer's, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMOIR_")}
    env.update(extra or {})
    return env


def memoir_stdio(db: Path | str, env: dict[str, str] | None = None) -> StdioServerParameters:
    return StdioServerParameters(command=MEMOIR[0], args=[*MEMOIR[1:], "serve", "--db", str(db)], env=clean_env(env))


def child_pids(marker: str) -> list[int]:
    """Pids of this process's children whose command line contains `marker`."""
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != me:
                continue
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        if marker in cmd:
            out.append(int(entry))
    return out


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of `pid` in MB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, kb, _ = line.split()
            values[key[:-1]] = int(kb) / 1024
    return values["VmRSS"], values["VmHWM"]


# -- numbers ---------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation; nan for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def loadavg() -> str:
    """The 1-minute load average and the core count, to judge how busy the machine was."""
    return f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"


class Timer:
    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
