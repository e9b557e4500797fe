"""Arguments that look harmless but were not: a string that pydantic read as `true`, and values
whose conversion raised past memoir's checks into a bare "Error executing tool" (issue 10,
defects 7 and 8)."""

from __future__ import annotations

import base64
import json

import pytest
from mcp import Client

from memoir.memory.errors import InvalidArgument
from memoir.memory.limits import parse_time
from memoir.server.app import build_server
from memoir.tools.context import AppContext

from .conftest import ERAS
from .helpers import call, call_error
from .test_extraction import SamplingClient
from .test_tools import snapshot

# -- defect 7: only JSON true deletes ---------------------------------------------------------------

NOT_JSON_TRUE = ["true", "True", "yes", "on", "1", "y", "t", 1, 1.0, "false", 0, None, [], {}]


async def test_clear_memories_deletes_only_on_json_true(client: Client, app: AppContext) -> None:
    await call(client, "add_memory", memory="Ava likes to ski")
    before = await snapshot(app)
    for confirm in NOT_JSON_TRUE:
        error = await call_error(client, "clear_memories", confirm=confirm)
        assert "confirm" in error and "JSON boolean true" in error and "nothing was deleted" in error, error
        assert await snapshot(app) == before, confirm
    assert "confirm" in await call_error(client, "clear_memories")  # omitted: false
    assert (await call(client, "clear_memories", confirm=True)) == {"deleted": 1, "declined": None}


async def test_dry_run_takes_only_json_booleans(client: Client, app: AppContext) -> None:
    """A dry_run the server misread would apply what the caller only wanted to see: no guessing."""
    before = await snapshot(app)
    for dry_run in ["true", "yes", "1", 1, "false", "no", 0, None]:
        error = await call_error(client, "extract_memories", message="I like tea", dry_run=dry_run)
        assert "dry_run" in error and "JSON boolean" in error, error
    assert await snapshot(app) == before


async def test_the_booleans_are_booleans_in_the_schema(client: Client) -> None:
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert tools["clear_memories"].input_schema["properties"]["confirm"]["type"] == "boolean"
    assert tools["extract_memories"].input_schema["properties"]["dry_run"]["type"] == "boolean"


# -- defect 8: every malformed value is a field error --------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "0001-01-01T00:00:00+14:00",  # year 0 in UTC: OverflowError
        "0001-01-01T00:00:00+23:59",
        "9999-12-31T23:59:59-14:00",  # year 10000 in UTC
        "9999-12-31T23:59:59.999999-00:01",
        "\ud800",
        "2026-01-31T09:30:00+14:00" + "0" * 100,
        "x" * 10_000,
    ],
)
def test_parse_time_turns_every_malformed_value_into_a_field_error(value: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        parse_time(value, "created_after")
    assert refused.value.field == "created_after"
    assert "2026-01-31" in str(refused.value)  # an example of what to send


def test_parse_time_keeps_the_extreme_years_it_can_store_sortable() -> None:
    """strftime's %Y writes the year 999 as '999', which sorts after '2026': the filter then
    silently excluded every memory. Years are four digits."""
    assert parse_time("0001-01-01", "created_after") == "0001-01-01T00:00:00.000000Z"
    assert parse_time("0999-12-31T23:00:00-01:00", "x") == "1000-01-01T00:00:00.000000Z"
    assert parse_time("9999-12-31T23:59:59.999999Z", "x") == "9999-12-31T23:59:59.999999Z"
    assert parse_time("0999-01-01", "x") < parse_time("2026-01-01", "x")


async def test_extreme_times_are_field_errors_and_extreme_years_filter(client: Client) -> None:
    await call(client, "add_memory", memory="Ava likes to ski")
    for field in ("created_after", "created_before"):
        error = await call_error(client, "search_memories", query="ski", **{field: "0001-01-01T00:00:00+14:00"})
        assert f"{field}: " in error and "years 1-9999" in error, error
    found = await call(client, "search_memories", query="ski", created_after="0999-01-01")
    assert [r["memory"] for r in found["results"]] == ["Ava likes to ski"]
    found = await call(client, "search_memories", query="ski", created_before="0999-01-01")
    assert found["results"] == []


def forged(value: object) -> str:
    """A cursor in the server's encoding around `value`."""
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


FORGED_CURSORS = [
    forged(["2026-01-31T09:30:00.000000Z", 2**63]),  # SQLite: OverflowError
    forged(["2026-01-31T09:30:00.000000Z", 10**30]),
    forged(["\ud800", 1]),  # SQLite: UnicodeEncodeError
    forged(["2026-01-31T09:30:00.000000Z", True]),
    forged(["2026-01-31T09:30:00.000000Z", -1]),
    forged([1, 1]),
    forged(["a", "b"]),
    forged("[" * 50 + "]" * 50),
    forged({"a": 1}),
    "[" * 1000,
    "\ud800",
    "x" * 100_000,
]


async def test_a_forged_cursor_is_a_field_error(client: Client, app: AppContext) -> None:
    for i in range(3):
        await call(client, "add_memory", memory=f"Ava fact {i}")
    for cursor in FORGED_CURSORS:
        error = await call_error(client, "list_memories", cursor=cursor)
        assert "cursor: is not a cursor this server made" in error, (cursor[:40], error)
    page = await call(client, "list_memories", limit=2)
    assert len((await call(client, "list_memories", limit=2, cursor=page["next_cursor"]))["memories"]) == 1


@pytest.mark.parametrize("mode", ERAS)
async def test_errors_raised_before_the_handler_are_field_errors_too(app: AppContext, mode: str) -> None:
    """With the client's model (no API key), resolvers check the arguments before the handler
    runs, outside its error mapping: their refusals were a bare "Error executing tool"."""
    model = SamplingClient('{"operations": []}')
    async with Client(build_server(app), mode=mode, sampling_callback=model) as client:
        error = await call_error(client, "extract_memories", messages=[])
        assert "messages: is empty" in error, error
        error = await call_error(client, "search_memories", query="ski", retrieval_method="agentic", topics=[" "])
        assert "topics[0]: is blank" in error, error
        error = await call_error(
            client, "search_memories", query="ski", retrieval_method="agentic", created_after="0001-01-01T00:00+01:00"
        )
        assert "created_after: " in error, error
    assert model.requests == []  # refused before the model was asked anything
