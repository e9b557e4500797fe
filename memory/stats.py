"""Counts over one user's current memories, for the dashboard's charts (server/ui.py)."""

from __future__ import annotations

from .store import Store


async def topic_counts(store: Store, user_id: str, limit: int = 50) -> list[tuple[str, int]]:
    """(topic, how many current memories have it), most used first."""
    rows = await store.fetch(
        "SELECT t.value AS topic, count(*) AS n FROM memories m, json_each(m.topics) t"
        " WHERE m.user_id = ? AND m.valid_to IS NULL GROUP BY t.value ORDER BY n DESC, topic LIMIT ?",
        (user_id, limit),
    )
    return [(r["topic"], int(r["n"])) for r in rows]


async def per_day(store: Store, user_id: str) -> list[tuple[str, int]]:
    """(YYYY-MM-DD, current memories created that day), oldest first; days with none are absent."""
    rows = await store.fetch(
        "SELECT substr(m.created_at, 1, 10) AS day, count(*) AS n FROM memories m"
        " WHERE m.user_id = ? AND m.valid_to IS NULL GROUP BY day ORDER BY day",
        (user_id,),
    )
    return [(r["day"], int(r["n"])) for r in rows]
