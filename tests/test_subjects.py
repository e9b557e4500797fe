"""The fourth round of ranking (issue 13, part 6): who a memory is about (memory/subjects.py),
misspelt query words (memory/spelling.py) and memories found by their neighbours' words
(memory/keyword_index.py) -- the rules alone, then through search over the MCP tools in both
protocol eras."""

from __future__ import annotations

import pytest
from mcp import Client

from memoir.memory import spelling, subjects
from memoir.memory.embeddings import load_embedder
from memoir.memory.ranking import FuseParams, fuse
from memoir.memory.store import Store
from memoir.memory.vectors import VectorIndex

from .helpers import call


def test_case_words_fold_and_strip_possessives() -> None:
    capitalised, lower = subjects.case_words("Ava's brother Ben met Ava in Paris; ava-style. I")
    assert capitalised == {"ava", "ben", "paris"}
    assert lower == {"brother", "met", "in", "ava", "style"}


@pytest.mark.parametrize(
    "text, found",
    [
        ("Caroline has a guinea pig named Oscar.", ("caroline",)),
        ("Ava and Ben went to Paris", ("ava", "ben")),
        ("Ava, Ben and Cleo went", ("ava",)),  # only "and"/"or" join: a list is left at its head
        ("Ava's brother Ben lives in Denver", ()),  # possessive: about Ben as much as Ava
        ("Ava and Ben's dog barks", ("ava",)),
        ("running is great for Ava", ()),
        ("", ()),
    ],
)
def test_subject_words(text: str, found: tuple[str, ...]) -> None:
    assert subjects.subject_words(text) == found


def test_a_name_is_capitalised_twice_and_never_lower_case() -> None:
    capitalised = {"caroline": 3, "running": 2, "rose": 2, "oscar": 1}
    lower = {"running": 1, "rose": 4}
    assert subjects.is_name("caroline", capitalised, lower)
    assert not subjects.is_name("running", capitalised, lower)  # "running" appears in lower case
    assert not subjects.is_name("oscar", capitalised, lower)  # once only
    assert subjects.query_names("what pet does caroline have? Oscar?", capitalised, lower) == {"caroline"}
    assert subjects.subject_of(("caroline", "oscar"), capitalised, lower) == {"caroline"}
    assert subjects.subject_of(("running",), capitalised, lower) == frozenset()
    assert subjects.about_others({"melanie"}, {"caroline"})
    assert not subjects.about_others({"melanie", "caroline"}, {"caroline"})
    assert not subjects.about_others(frozenset(), {"caroline"})  # no subject: nothing to say
    assert not subjects.about_others({"melanie"}, frozenset())  # the query names nobody


def test_fusion_lowers_memories_about_others_by_the_subject_factor() -> None:
    keyword = [("m-melanie", 2.0), ("m-caroline", 1.9), ("m-else", 0.1)]
    created = {"m-melanie": "2026-01-01", "m-caroline": "2026-01-01", "m-else": "2026-01-01"}
    plain = dict(fuse(keyword, [], created))
    lowered = dict(fuse(keyword, [], created, about_others={"m-melanie"}))
    assert lowered["m-melanie"] == pytest.approx(plain["m-melanie"] * FuseParams().subject_factor)
    assert lowered["m-caroline"] == plain["m-caroline"]
    assert [m for m, _ in fuse(keyword, [], created, about_others={"m-melanie"})][0] == "m-caroline"


def test_respellings_only_for_words_nobody_knows() -> None:
    words = ["pursue", "counseling", "chili", "education", "educating", "fundraiser", "purse"]
    assert spelling.respellings("persue", words) == ["pursue"]
    assert sorted(spelling.respellings("educaton", words)) == ["educating", "education"]  # two edits from 8 letters
    assert spelling.respellings("funraiser", words) == ["fundraiser"]
    assert spelling.respellings("child", words) == []  # a word of the model's vocabulary: never "chili"
    assert spelling.respellings("pursu", ["bursue"]) == []  # not the same first letter
    assert spelling.respellings("purs", words) == []  # short words are left alone
    assert spelling.known_to_model("child") and not spelling.known_to_model("persue")


async def _add(client: Client, *texts: str) -> list[str]:
    return [(await call(client, "add_memory", memory=t, user_id="ava"))["memory_id"] for t in texts]


async def _hybrid(client: Client, query: str) -> list[str]:
    found = await call(client, "search_memories", query=query, user_id="ava", retrieval_method="hybrid", min_relevance=0)
    return [m["memory_id"] for m in found["results"]]


async def test_a_question_about_someone_ranks_their_memories_above_others(client: Client) -> None:
    melanie, caroline, *_ = await _add(
        client,
        "Melanie has pets, a cat named Bailey and a dog named Luna.",
        "Caroline has a guinea pig named Oscar.",
        "Caroline painted a sunset last week.",
        "Melanie went camping with her kids.",
        "Caroline's brother Tom lives in Denver.",
        "Tom is learning the guitar.",
    )
    ranked = await _hybrid(client, "What pet does Caroline have?")
    assert ranked.index(caroline) < ranked.index(melanie)
    # The same question about Melanie keeps her memory first: the signal follows the name asked.
    assert (await _hybrid(client, "What pets does Melanie have?"))[0] == melanie


async def test_a_misspelt_word_finds_the_users_word(client: Client) -> None:
    (pursue,) = await _add(client, "Caroline wants to pursue counseling as a career.")
    await _add(client, "Caroline likes jazz.", "Caroline went hiking in June.")
    keyword = await call(client, "search_memories", query="persue", user_id="ava", retrieval_method="keyword", min_relevance=0)
    assert keyword["results"] == []  # the keyword method takes words as they are
    assert (await _hybrid(client, "persue"))[0] == pursue


async def test_hybrids_keyword_side_respells_only_unknown_words(tmp_path) -> None:
    store = await Store.open(tmp_path / "spell.db")
    vectors = VectorIndex(store, lambda: load_embedder("default"))
    try:
        pursue = await store.add("ava", "Caroline wants to pursue counseling as a career.")
        await store.add("ava", "Caroline likes jazz and her child likes chili.")
        timeline = await vectors.user_vectors("ava")
        assert timeline.respelled("persue") == {"persue": ["pursu"]}
        assert timeline.respelled("chld child pursue") == {}  # short, the model's, the user's own
        assert await store.keyword_ranked("ava", "persue", limit=5) == []
        found = await store.keyword_ranked("ava", "persue", limit=5, respelled=timeline.respelled("persue"))
        assert [m for m, _ in found][:1] == [pursue.memory_id]  # its neighbour follows (memory/keyword_index.py)
        # Relevance's coverage reads the word as the ranking did: "persue" is held where "pursue" is.
        size, counts, held = await store.term_matches("ava", ["persue"], [pursue.memory_id], timeline.respelled("persue"))
        assert counts == {"persue": 1} and held == {pursue.memory_id: {"persue"}}
        assert (await store.term_matches("ava", ["persue"], [pursue.memory_id]))[1:] == ({"persue": 0}, {pursue.memory_id: set()})
    finally:
        await store.close()


async def test_a_memory_is_found_by_the_words_of_the_memories_written_beside_it(client: Client) -> None:
    """Neighbour document expansion (memory/keyword_index.py) through the tools: "when did she
    move" finds the memory that says when, written right after the one that says where."""
    lisbon, may, *_ = await _add(
        client,
        "Ava moved to Lisbon with her partner.",
        "It happened in May 2024, right after the wedding.",
        "Ava's favourite dish is grilled sardines.",
        "Ava plays padel on Sundays.",
    )
    found = await call(client, "search_memories", query="Lisbon", user_id="ava", retrieval_method="keyword", min_relevance=0)
    ranked = [m["memory_id"] for m in found["results"]]
    assert ranked[:2] == [lisbon, may]  # the holder first, then its neighbour
    assert found["results"][1]["score"] < found["results"][0]["score"]
