"""What one extract_memories call costs as a user's memories grow.

Runs the real server in-process with the real anthropic client pointed at a local server that
speaks the Anthropic Messages API (tests/fake_anthropic.py) and answers at once, so what is
timed is memoir's own overhead: finding the related memories, the HTTP round trip, checking
and applying the operations. For each store size it prints the input tokens the model was sent
(the local server counts them as JSON characters / 4, the same way every time), how many
existing memories the prompt listed, and the call's p50/p95.

The input must stay flat once the store is larger than K (MEMOIR_EXTRACT_RELATED, 20): the
model sees the new messages and the top-K related memories, never the whole store.

    python bench/extraction.py [--sizes 10,100,1000,10000] [--calls 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mcp import Client  # noqa: E402

from memoir.memory.store import Change, Edit  # noqa: E402
from memoir.server.app import build_server, running_app  # noqa: E402
from memoir.server.settings import Settings  # noqa: E402
from tests.fake_anthropic import FakeAnthropic, tool_use  # noqa: E402

HOBBIES = ["skiing", "chess", "pottery", "climbing", "jazz piano", "gardening", "running", "baking"]
PLACES = ["Denver", "Lisbon", "Osaka", "Toronto", "Nairobi", "Oslo", "Lima", "Hanoi"]
PEOPLE = ["her sister Mia", "her friend Tom", "her boss Ana", "her neighbour Raj", "her son Leo"]


def fact(i: int) -> str:
    kind = i % 3
    if kind == 0:
        return f"Ava took up {HOBBIES[i % len(HOBBIES)]} in {2000 + i % 25} (note {i})"
    if kind == 1:
        return f"Ava spent a week in {PLACES[i % len(PLACES)]} with {PEOPLE[i % len(PEOPLE)]} (trip {i})"
    return f"Ava's favourite dish number {i} is a {PLACES[i % len(PLACES)]}-style stew"


async def grow(app, user: str, have: int, want: int) -> None:
    for start in range(have, want, 500):
        batch = [Edit("add", memory=fact(i), change=Change(actor="import")) for i in range(start, min(want, start + 500))]
        await app.store.apply(user, batch)


async def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000,10000")
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    conversation = [
        {"role": "user", "content": "I've just come back from Lisbon, where I tried pottery for the first time."},
        {"role": "assistant", "content": "That sounds lovely! Will you keep it up?"},
        {"role": "user", "content": "Yes, and I'm giving up chess for now - no time."},
    ]
    with FakeAnthropic() as fake, tempfile.TemporaryDirectory() as tmp:
        fake.responder = lambda request: tool_use({"operations": []})
        settings = Settings(
            db_path=Path(tmp) / "bench.db", anthropic_api_key="sk-bench", anthropic_base_url=fake.url, llm_max_retries=0
        )
        k = settings.extraction.related_k
        print(f"extract_memories cost by store size (K = {k} related memories, {args.calls} calls each)")
        print(f"{'memories':>9} {'input tokens':>13} {'listed':>7} {'p50 ms':>8} {'p95 ms':>8}")
        have = 0
        async with running_app(settings) as app, Client(build_server(app), mode="legacy") as client:
            for size in sizes:
                await grow(app, "ava", have, size)
                have = size
                first = len(fake.requests)
                times = []
                for _ in range(args.calls + 1):
                    started = time.perf_counter()
                    result = await client.call_tool(
                        "extract_memories", {"messages": conversation, "user_id": "ava", "dry_run": True}
                    )
                    times.append((time.perf_counter() - started) * 1000)
                    assert not result.is_error, result.content[0].text
                times = times[1:]  # the first call of a size loads that user's vectors
                request = fake.requests[-1].body
                tokens = len(json.dumps([request["system"], request["messages"], request["tools"]])) // 4
                listed = request["messages"][0]["content"].count("id=")
                assert len(fake.requests) - first == args.calls + 1  # one model call per extraction
                p95 = sorted(times)[max(0, int(len(times) * 0.95) - 1)]
                print(f"{size:>9} {tokens:>13} {listed:>7} {statistics.median(times):>8.1f} {p95:>8.1f}")


if __name__ == "__main__":
    asyncio.run(main())
