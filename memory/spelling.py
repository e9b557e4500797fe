"""Respelling a misspelt query word as the user's own words ("persue" -> "pursue"), for hybrid's
keyword query (memory/ranking.py, "fourth round").

Queries come from people as often as from models (a host hook passes the user's prompt), and a
misspelt word matches nothing. A query word is respelt only when nobody knows it: it is not a
word of the user's memories and not a whole word of the embedding model's vocabulary (the
30,522 WordPiece tokens of all-MiniLM-L6-v2, 22,501 of them whole alphabetic words, shipped in
memory/data), so "child" is never "corrected" to the store's "chili". It is then replaced by
every word of the user's vocabulary within :func:`allowed_edits` edits (optimal string alignment:
insertions, deletions, substitutions, adjacent swaps) that starts with the same letter, each as a
query word of full weight.

On LoCoMo dev's 383 questions (categories 1-4; bench/facts_research.py's copy of the ranking),
three words are respelt: "educaton" (-> "education", "educating"), "persue" (-> "pursue"),
"funraiser" (-> "fundraiser"). Respelling every word the store lacks, without the model's
vocabulary, touched 16 questions, 13 of them wrongly ("child" -> "chili", "place" -> "plate",
"regarding" -> "reading").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

__all__ = ["MIN_LENGTH", "allowed_edits", "known_to_model", "respellings"]

#: Shorter words are left alone: at 4 letters one edit reaches too many real words.
MIN_LENGTH = 5

_TOKENIZER = Path(__file__).parent / "data" / "all-MiniLM-L6-v2" / "tokenizer.json"


def allowed_edits(word: str) -> int:
    """One edit for words of 5-7 letters, two from 8."""
    return 1 if len(word) < 8 else 2


@lru_cache(maxsize=1)
def _model_words() -> frozenset[str]:
    vocab = json.loads(_TOKENIZER.read_text(encoding="utf-8"))["model"]["vocab"]
    return frozenset(w for w in vocab if w.isalpha())


def known_to_model(word: str) -> bool:
    """Whether `word` (folded) is a whole word of the embedding model's vocabulary."""
    return word in _model_words()


def respellings(word: str, vocabulary: Sequence[str]) -> list[str]:
    """The words of `vocabulary` (the user's, folded) that `word` (folded, not one of them) may
    be a misspelling of; [] when the word is short or a word of the model's."""
    if len(word) < MIN_LENGTH or not word.isalpha() or known_to_model(word):
        return []
    # Imported here: ~30 ms, paid only by a search that has a word to respell.
    from rapidfuzz import process
    from rapidfuzz.distance import OSA

    k = allowed_edits(word)
    found = process.extract(word, vocabulary, scorer=OSA.distance, score_cutoff=k, limit=None)
    return [w for w, _, _ in found if w[0] == word[0]]
