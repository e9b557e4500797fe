"""How memoir's token rule (memory/budget.py: 1/4 token per ASCII character, rounded up, + 1 per other) compares with a
real tokenizer: the WordPiece tokenizer memoir ships for its embedding model (all-MiniLM-L6-v2,
memory/data), without the [CLS]/[SEP] it adds.

Prints, per sample set, the mean of rule / WordPiece and how often the rule counts fewer tokens
(an undercount is the risky side of a budget).

    .venv/bin/python bench/tokens.py
"""

from __future__ import annotations

import itertools
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tokenizers import Tokenizer  # noqa: E402

from memoir.memory.budget import count_tokens  # noqa: E402
from scale import facts  # noqa: E402

TOKENIZER = Path(__file__).resolve().parent.parent / "memory" / "data" / "all-MiniLM-L6-v2" / "tokenizer.json"

SAMPLES = {
    "synthetic facts (bench/scale.py, 10,000)": list(itertools.islice(facts(), 10_000)),
    "longer English": [
        "Ava has been training for the Boulder marathon since January and runs 40 miles a week with her club.",
        "The user prefers concise answers with code examples in Python 3.11, and dislikes long preambles.",
        "Ava's daughter Mia (born 2019) is allergic to peanuts and shellfish; always check restaurant menus.",
        "Ava works remotely for a Berlin start-up as a data analyst and visits the office every other month.",
    ],
    "accented European": [
        "Ana vive em São Paulo e trabalha como enfermeira no hospital municipal.",
        "Jürgen fährt jeden Morgen mit dem Fahrrad zur Arbeit in München.",
        "Léa préfère le thé vert au café et déteste les réunions matinales.",
    ],
    "CJK": ["アヴァはデンバーに住んでいて、毎週末にスキーをします。", "用户喜欢喝绿茶，不喜欢咖啡。", "에바는 덴버에 살고 있습니다."],
}


def main() -> None:
    tok = Tokenizer.from_file(str(TOKENIZER))
    tok.no_padding()
    tok.no_truncation()
    print(f"{'sample':44} {'n':>6} {'rule/WordPiece':>15} {'rule < WordPiece':>17}")
    for name, texts in SAMPLES.items():
        ratios, under = [], 0
        for text in texts:
            wordpiece = len(tok.encode(text, add_special_tokens=False).ids)
            rule = count_tokens(text)
            ratios.append(rule / wordpiece)
            under += rule < wordpiece
        print(f"{name:44} {len(texts):>6} {statistics.mean(ratios):>15.2f} {under / len(texts):>16.0%}")


if __name__ == "__main__":
    main()
