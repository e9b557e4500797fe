"""Secrets detector bench (issue 13, part 4): how many real-format secrets are caught, how many
ordinary memories are refused, and what a check costs.

- Secrets: a corpus generated here, fake but well-formed (random bodies in each provider's
  format: AWS AKIA…, GitHub ghp_…, Slack xoxb-…, Stripe sk_live_…, JWTs, PEM private keys,
  Luhn-valid card numbers, Anthropic/OpenAI/Google keys, `password: …` sentences), each embedded
  in a natural sentence about the user. Seeded, so every run sees the same corpus.
- Ordinary memories: every LoCoMo dev turn, as bench/retrieval.py stores it
  ("[<date>] <speaker>: <text>"), read in place (MEMOIR_LOCOMO or ../shared/data/locomo-dev.json).

Prints caught % per kind, the false-refusal % (turns the default `refuse` would refuse) and the
cost per check in µs (median of 5 passes over all texts, after a warm-up that pays the import).

    python bench/credentials.py            # --per-kind N (default 8) secrets of each kind
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `bench._common`, from the repository root

import argparse  # noqa: E402
import base64  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import string  # noqa: E402
import time  # noqa: E402

from bench._common import load_locomo, log  # noqa: E402
from memoir.memory.secrets import kinds, scan  # noqa: E402

ALNUM = string.ascii_letters + string.digits
rng = random.Random(13)


def pick(chars: str, n: int) -> str:
    return "".join(rng.choice(chars) for _ in range(n))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def luhn_card(prefix: str, length: int) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    total = 0
    for i, d in enumerate(reversed(body)):
        d = int(d)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    number = body + str((10 - total % 10) % 10)
    if rng.random() < 0.5:
        return " ".join(number[i : i + 4] for i in range(0, len(number), 4))
    return number


def pem() -> str:
    kind = rng.choice(["RSA ", "EC ", "OPENSSH ", ""])
    lines = [pick(ALNUM + "+/", 64) for _ in range(rng.randint(3, 8))]
    return f"-----BEGIN {kind}PRIVATE KEY-----\n" + "\n".join(lines) + f"\n-----END {kind}PRIVATE KEY-----"


def jwt() -> str:
    header = b64url(json.dumps({"alg": rng.choice(["HS256", "RS256"]), "typ": "JWT"}).encode())
    payload = b64url(json.dumps({"sub": str(rng.randint(1, 10**9)), "name": "Ava", "iat": rng.randint(10**9, 2 * 10**9)}).encode())
    return f"{header}.{payload}.{b64url(rng.randbytes(32))}"


GENERATORS = {
    "aws-access-key": lambda: "AKIA" + pick(string.ascii_uppercase + string.digits, 16),
    "github-token": lambda: rng.choice(["ghp_", "gho_", "ghs_"]) + pick(ALNUM, 36),
    "slack-token": lambda: f"xoxb-{rng.randint(10**10, 10**11)}-{rng.randint(10**11, 10**12)}-{pick(ALNUM, 24)}",
    "stripe-key": lambda: rng.choice(["sk_live_", "rk_live_"]) + pick(ALNUM, 24),
    "jwt": jwt,
    "private-key": pem,
    "card-number": lambda: luhn_card(rng.choice(["4", "51", "55", "2221", "37", "6011"]), rng.choice([15, 16])),
    "anthropic-key": lambda: "sk-ant-api03-" + pick(ALNUM + "-_", 93) + "AA",
    "openai-key": lambda: "sk-proj-" + pick(ALNUM + "-_", 40) + "T3BlbkFJ" + pick(ALNUM, 40),
    "google-api-key": lambda: "AIza" + pick(ALNUM + "-_", 35),
    "password": lambda: rng.choice(["hunter2", "Tr0ub4dor&3", "correct-horse-77", "S3cret!pw", "swordfish", "letmein42"]),
}

SENTENCES = {
    "password": [
        "The user's wifi password is {s}.",
        "Ava said her email password: {s}",
        "password = {s} (Ava's work laptop)",
        "The passcode for the garage door is {s}",
        "Ava's password for Netflix is \"{s}\"",
        "Ava's PIN is {pin}",
        "Ava uses {s} as the password for her bank",  # no "password is/:" phrasing: known to be missed
        "Ava's bank login: user ava.k, pw {s}",
    ],
    "private-key": ["Ava pasted her server key:\n{s}", "The deploy key Ava uses is {s}"],
}
DEFAULT_SENTENCES = [
    "Ava's {label} is {s}",
    "The user shared their {label}: {s}, for the deploy script.",
    "Remember that Ava uses {s} as her {label} at work.",
    "Ava keeps {s} in her notes as the {label} for the side project",
]
LABELS = {
    "aws-access-key": "AWS access key", "github-token": "GitHub token", "slack-token": "Slack bot token",
    "stripe-key": "Stripe key", "jwt": "session token", "card-number": "card number",
    "anthropic-key": "Claude API key", "openai-key": "OpenAI key", "google-api-key": "Maps API key",
}


def corpus(per_kind: int) -> list[tuple[str, str]]:
    out = []
    for kind, make in GENERATORS.items():
        templates = SENTENCES.get(kind, DEFAULT_SENTENCES)
        for i in range(per_kind):
            sentence = templates[i % len(templates)].format(
                s=make(), label=LABELS.get(kind, kind), pin=rng.randint(1000, 999999)
            )
            out.append((kind, sentence))
    return out


def cost_us(texts: list[str]) -> tuple[float, float]:
    passes = []
    for _ in range(5):
        t0 = time.perf_counter()
        for text in texts:
            scan(text)
        passes.append((time.perf_counter() - t0) / len(texts) * 1e6)
    return statistics.median(passes), min(passes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-kind", type=int, default=8)
    args = parser.parse_args()

    t0 = time.perf_counter()
    scan("warm up: the first check imports detect-secrets")
    first = time.perf_counter() - t0

    secrets = corpus(args.per_kind)
    turns = [t.memory for c in load_locomo() for t in c.turns]
    log(f"{len(secrets)} secrets, {len(turns)} LoCoMo turns")

    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"first check (imports detect-secrets): {first * 1000:.0f} ms\n")
    print("| kind | secrets | caught | caught % | named as |")
    print("|---|---|---|---|---|")
    total = caught = 0
    for kind in GENERATORS:
        mine = [s for k, s in secrets if k == kind]
        found = [kinds(scan(s)) for s in mine]
        hit = sum(1 for f in found if f)
        names = sorted({n for f in found for n in f})
        total += len(mine)
        caught += hit
        print(f"| {kind} | {len(mine)} | {hit} | {100 * hit / len(mine):.1f} | {', '.join(names) or '-'} |")
    print(f"| **all** | {total} | {caught} | **{100 * caught / total:.1f}** | |")

    refused = [(t, kinds(scan(t))) for t in turns]
    refused = [(t, k) for t, k in refused if k]
    print(f"\nordinary memories (LoCoMo dev turns): {len(turns)}, refused {len(refused)} "
          f"= **{100 * len(refused) / len(turns):.2f} %**")
    for text, k in refused[:10]:
        print(f"  refused as {', '.join(k)}: {text[:100]!r}")

    turn_median, turn_min = cost_us(turns)
    secret_median, secret_min = cost_us([s for _, s in secrets])
    mean_len = statistics.mean(map(len, turns))
    print(f"\ncost per check: ordinary memory (mean {mean_len:.0f} chars) {turn_median:.1f} µs median of 5 passes "
          f"(best {turn_min:.1f}); a text holding a secret {secret_median:.1f} µs (best {secret_min:.1f})")


if __name__ == "__main__":
    main()
