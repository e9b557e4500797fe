"""What must not be kept: credentials in the text of a memory.

Every write checks its text (memory, topics, the source `input`) with `SecretsPolicy.clean`:

- `refuse` (the default): `SecretRefused`, naming the kind found ("an AWS access key") and never
  the secret itself; nothing is stored. Extraction drops such an operation and reports why.
- `redact`: each secret is replaced by a marker such as `[REDACTED aws-access-key]` and the
  rest is stored.
- `allow`: stored as it is.

Detection is Yelp's detect-secrets (its per-provider plugins, run in-process on the string through
their `analyze_string`; none of its file-scanning, baseline or network-verification machinery),
imported on the first check rather than at start-up (it costs about 0.1 s to import). It is
complemented here only where it has nothing, each pattern documented below:

| kind | detect-secrets plugin, or memoir's pattern |
|---|---|
| aws-access-key, github-token, gitlab-token, slack-token, stripe-key, jwt, private-key, npm-token, pypi-token, sendgrid-key, mailchimp-key, twilio-key, telegram-token, discord-token, square-secret, azure-storage-key, artifactory-token, ibm-credentials, cloudant-credentials, softlayer-credentials, url-password | detect-secrets' plugin of that provider (`url-password`: BasicAuthDetector, `user:pass@` in a URL) |
| password | detect-secrets' KeywordDetector with its config-file rules (`password: x`, `secret = x`, `api_key: x`), run only when one of its keywords is present; plus memoir's phrase rule for prose ("the wifi password is hunter2", "my PIN is 4821", below) |
| high-entropy-string | detect-secrets' Base64/Hex high-entropy plugins at their default limits (4.5 / 3.0 bits), on quoted strings as there |
| anthropic-key | memoir: `sk-ant-<kind>-<20+ token characters>` |
| openai-key | detect-secrets' OpenAIDetector (keys with the `T3BlbkFJ` marker), plus memoir: `sk-` / `sk-proj-` / `sk-svcacct-` / `sk-admin-` followed by 32+ token characters |
| google-api-key | memoir: `AIza` + 35 characters |
| card-number | memoir: 13-19 digits (spaces or dashes between groups allowed) starting with 2-6 (the card networks' ranges) that pass the Luhn check |

Left out on purpose: detect-secrets' public-IP plugin (an address is not a credential).

The bench (`bench/credentials.py`) measures it: the share of real-format secrets caught per kind,
the share of ordinary memories (LoCoMo turns) refused, and the cost of a check.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from .errors import SecretRefused

Mode = Literal["refuse", "redact", "allow"]
MODES: tuple[Mode, ...] = ("refuse", "redact", "allow")

# The human name of each kind, as errors and skipped operations say it.
LABELS: dict[str, str] = {
    "aws-access-key": "an AWS access key",
    "github-token": "a GitHub token",
    "gitlab-token": "a GitLab token",
    "slack-token": "a Slack token",
    "stripe-key": "a Stripe key",
    "jwt": "a JSON Web Token",
    "private-key": "a private key",
    "npm-token": "an npm token",
    "pypi-token": "a PyPI token",
    "sendgrid-key": "a SendGrid API key",
    "mailchimp-key": "a Mailchimp API key",
    "twilio-key": "a Twilio API key",
    "telegram-token": "a Telegram bot token",
    "discord-token": "a Discord bot token",
    "square-secret": "a Square OAuth secret",
    "azure-storage-key": "an Azure storage key",
    "artifactory-token": "an Artifactory token",
    "ibm-credentials": "IBM Cloud credentials",
    "cloudant-credentials": "Cloudant credentials",
    "softlayer-credentials": "SoftLayer credentials",
    "url-password": "a password in a URL",
    "password": "a password",
    "high-entropy-string": "a random-looking key or token",
    "anthropic-key": "an Anthropic API key",
    "openai-key": "an OpenAI API key",
    "google-api-key": "a Google API key",
    "card-number": "a card number",
}

# detect-secrets plugin class name -> kind.
_PLUGIN_KINDS: dict[str, str] = {
    "AWSKeyDetector": "aws-access-key",
    "ArtifactoryDetector": "artifactory-token",
    "AzureStorageKeyDetector": "azure-storage-key",
    "BasicAuthDetector": "url-password",
    "CloudantDetector": "cloudant-credentials",
    "DiscordBotTokenDetector": "discord-token",
    "GitHubTokenDetector": "github-token",
    "GitLabTokenDetector": "gitlab-token",
    "IbmCloudIamDetector": "ibm-credentials",
    "IbmCosHmacDetector": "ibm-credentials",
    "JwtTokenDetector": "jwt",
    "MailchimpDetector": "mailchimp-key",
    "NpmDetector": "npm-token",
    "OpenAIDetector": "openai-key",
    "PrivateKeyDetector": "private-key",
    "PypiTokenDetector": "pypi-token",
    "SendGridDetector": "sendgrid-key",
    "SlackDetector": "slack-token",
    "SoftlayerDetector": "softlayer-credentials",
    "SquareOAuthDetector": "square-secret",
    "StripeDetector": "stripe-key",
    "TelegramBotTokenDetector": "telegram-token",
    "TwilioKeyDetector": "twilio-key",
}

# -- memoir's complements -------------------------------------------------------------------------

_ANTHROPIC = re.compile(r"\bsk-ant-[a-z]+\d*-[A-Za-z0-9_\-]{20,}")
_OPENAI = re.compile(r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{32,}")
_GOOGLE = re.compile(r"\bAIza[0-9A-Za-z_\-]{35}(?![0-9A-Za-z_\-])")
# 13-19 digits, single spaces or dashes allowed between digits; the networks' ranges start 2-6.
_CARD = re.compile(r"(?<![\d\-])[2-6](?:[ \-]?\d){12,18}(?![\d\-])")
# A PEM block, from BEGIN to END (or to the end of the text when it was cut off).
_DIGITS = re.compile(r"\d[\d \-]{11}")  # what a card number cannot do without: 12+ digits, spaces, dashes
_PEM = re.compile(
    r"-*\s*BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-*.*?(?:END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-*|\Z)", re.S
)
_PUTTY = re.compile(r"PuTTY-User-Key-File-\d.*\Z", re.S)
_JWT_TAIL = re.compile(r"[A-Za-z0-9_\-.+/=]*")

# Prose: "<credential word> [for|to|of|on <one or two words>] is|was|:|= <value>".
_PHRASE = re.compile(
    r"\b(?P<word>passwords?|passwd|passphrase|passcode|pass\s?code|pwd|pin(?:\s?(?:code|number))?)\b"
    r"(?:\s+(?:for|to|of|on|at)\s+(?:(?:the|my|his|her|their|our|your)\s+)?[\w.@'’\-]+(?:\s+[\w.@'’\-]+)?)?"
    r"\s*(?P<verb>is|was|:|=|->)\s*"
    r"(?P<quote>[\"'“‘`]?)(?P<value>[^\s\"'”’`]+)",
    re.I,
)
# Words that follow "password is" in ordinary sentences ("her password is too weak").
_NOT_A_VALUE = frozenset(
    """a an the my his her their our your its this that these those same different new old
    weak strong long short secure safe simple easy hard complicated complex good bad fine ok okay
    wrong right correct incorrect invalid valid expired required needed missing lost forgotten
    saved stored written hidden private secret changed reset set updated shared known unknown
    too very so not still also just only always never really quite pretty somewhere something
    nothing everything what which who where how why when there here in on at for to of by with
    from into about like as and or but if""".split()
)
_PIN_VALUE = re.compile(r"\d{4,8}")
_TRAILING = ".,;:!?)]}>"


@dataclass(frozen=True)
class Finding:
    """One secret found: its kind and where it is (the span is used only to redact)."""

    kind: str
    start: int
    end: int

    @property
    def label(self) -> str:
        return LABELS.get(self.kind, f"a secret ({self.kind})")


def marker(kind: str) -> str:
    return f"[REDACTED {kind}]"


class SecretsPolicy:
    """The operator's choice (`MEMOIR_SECRETS`) and the detector behind it."""

    def __init__(self, mode: Mode = "refuse") -> None:
        if mode not in MODES:
            raise ValueError(f"MEMOIR_SECRETS must be refuse, redact or allow, not {mode!r}")
        self.mode: Mode = mode

    def __repr__(self) -> str:
        return f"SecretsPolicy({self.mode!r})"

    def clean(self, text: str, field: str) -> str:
        """`text` as it may be stored; `SecretRefused` when it holds a secret and the mode refuses."""
        if self.mode == "allow" or not text:
            return text
        findings = scan(text)
        if not findings:
            return text
        if self.mode == "refuse":
            raise SecretRefused(field, kinds(findings))
        return redact(text, findings)

    def clean_optional(self, text: str | None, field: str) -> str | None:
        return None if text is None else self.clean(text, field)

    def clean_topics(self, topics: Iterable[str], field: str = "topics") -> list[str]:
        return [self.clean(t, f"{field}[{i}]") if isinstance(t, str) else t for i, t in enumerate(topics)]

    def scrub(self, text: str | None) -> str | None:
        """Redacted unless the mode is `allow`: for text that is kept alongside a change but is
        not itself the fact (an extraction's source conversation, the model's reason)."""
        if text is None or self.mode == "allow":
            return text
        findings = scan(text)
        return redact(text, findings) if findings else text


def kinds(findings: Iterable[Finding]) -> list[str]:
    """The distinct kinds, in order of first appearance."""
    out: list[str] = []
    for f in findings:
        if f.kind not in out:
            out.append(f.kind)
    return out


def redact(text: str, findings: list[Finding]) -> str:
    out: list[str] = []
    pos = 0
    for f in sorted(findings, key=lambda f: f.start):
        if f.start < pos:
            continue  # overlaps one already replaced
        out.append(text[pos : f.start])
        out.append(marker(f.kind))
        pos = f.end
    out.append(text[pos:])
    return "".join(out)


def scan(text: str) -> list[Finding]:
    """Every secret in `text`, overlapping findings merged (the first, longest one kept)."""
    low = text.lower()
    found: list[Finding] = []
    for kind, secret in _library_matches(text, low):
        found.extend(_locate(text, kind, secret))
    found.extend(_own_matches(text, low))
    # A marker left by an earlier redaction ("password: [REDACTED password]") is not a secret.
    found = [f for f in found if not text.startswith("[REDACTED ", f.start)]
    found.sort(key=lambda f: (f.start, -(f.end - f.start)))
    merged: list[Finding] = []
    for f in found:
        if merged and f.start < merged[-1].end:
            if f.end > merged[-1].end:
                last = merged[-1]
                merged[-1] = Finding(last.kind, last.start, f.end)
            continue
        merged.append(f)
    return merged


# -- detect-secrets ----------------------------------------------------------------------------


# Skipping a plugin when a string its pattern cannot match without is absent: the result is the
# same, the cost of a check on ordinary text about a fifth. The keyed credential plugins (Cloudant,
# IBM, SoftLayer, Discord) all need a run of 24+ token characters; Artifactory's tokens start with
# AKC or AP; Mailchimp keys end in -us<N>.
_LONG_TOKEN = re.compile(r"[A-Za-z0-9_\-]{24}")
_GATES: dict[str, Any] = {
    "CloudantDetector": lambda text, low, long: long,
    "IbmCloudIamDetector": lambda text, low, long: long,
    "IbmCosHmacDetector": lambda text, low, long: long,
    "SoftlayerDetector": lambda text, low, long: long,
    "DiscordBotTokenDetector": lambda text, low, long: long,
    "ArtifactoryDetector": lambda text, low, long: "AKC" in text or "AP" in text,
    "MailchimpDetector": lambda text, low, long: "-us" in low,
}
# Every keyword of detect-secrets' KeywordDetector (api_key, db_pass, password, pwd, secret,
# contraseña, ...) contains one of these.
_KEYWORD_PARTS = ("key", "pass", "pwd", "secret", "contrase")
_PHRASE_PARTS = ("pass", "pwd", "pin")


@dataclass
class _Library:
    regex_plugins: list[tuple[str, Any, Any]]
    keyword: Any
    keyword_rules: Any
    entropy: list[Any]


@lru_cache(maxsize=1)
def _library() -> _Library:
    """detect-secrets' plugins, imported on the first check (not at start-up)."""
    from detect_secrets.plugins import (
        artifactory, aws, azure_storage_key, basic_auth, cloudant, discord, github_token, gitlab_token,
        high_entropy_strings, ibm_cloud_iam, ibm_cos_hmac, jwt, keyword, mailchimp, npm, openai,
        private_key, pypi_token, sendgrid, slack, softlayer, square_oauth, stripe, telegram_token, twilio,
    )

    modules = (
        artifactory, aws, azure_storage_key, basic_auth, cloudant, discord, github_token, gitlab_token,
        ibm_cloud_iam, ibm_cos_hmac, jwt, mailchimp, npm, openai, private_key, pypi_token, sendgrid, slack,
        softlayer, square_oauth, stripe, telegram_token, twilio,
    )
    plugins = []
    for module in modules:
        for name, kind in _PLUGIN_KINDS.items():
            cls = getattr(module, name, None)
            if cls is not None:
                plugins.append((kind, cls(), _GATES.get(name)))
    return _Library(
        regex_plugins=plugins,
        keyword=keyword.KeywordDetector(),
        keyword_rules=keyword.CONFIG_DENYLIST_REGEX_TO_GROUP,
        entropy=[high_entropy_strings.Base64HighEntropyString(), high_entropy_strings.HexHighEntropyString()],
    )


# Every pattern of the regex plugins (_PLUGIN_KINDS) needs a run of 20+ token characters (AWS's
# AKIA + 16 is the shortest) or one of these strings (basic auth's ://, PEM and PuTTY headers,
# Slack's xox-, a JWT's eyJ, npm's _authToken). Ordinary memories have neither, and skipping the
# plugins then gives the same result at a fraction of the cost: a check is on every write, and an
# add is ~0.35 ms (the adds/s target of bench/scale.py).
_TOKEN_RUN = re.compile(r"[A-Za-z0-9_\-+/=]{20}")
_PATTERN_SIGNS = ("://", "BEGIN", "PuTTY", "xox", "eyJ", "_authToken")


def _library_matches(text: str, low: str) -> Iterator[tuple[str, str]]:
    lib = _library()
    long = _LONG_TOKEN.search(text) is not None
    patterns_may_match = long or _TOKEN_RUN.search(text) is not None or any(s in text for s in _PATTERN_SIGNS)
    for kind, plugin, gate in lib.regex_plugins if patterns_may_match else ():
        if gate is not None and not gate(text, low, long):
            continue
        for secret in plugin.analyze_string(text):
            if secret:
                yield kind, secret
    if any(part in low for part in _KEYWORD_PARTS):
        for secret in lib.keyword.analyze_string(text, lib.keyword_rules):
            if secret and _plausible_keyword_value(secret):
                yield "password", secret
    if "'" in text or '"' in text:
        for plugin in lib.entropy:
            for secret in plugin.analyze_string(text):
                if plugin.calculate_shannon_entropy(secret) > plugin.entropy_limit:
                    yield "high-entropy-string", secret


def _plausible_keyword_value(value: str) -> bool:
    """The keyword rules also match prose such as "secrets: none"; a value that is a common word is not a secret."""
    bare = value.strip(_TRAILING + "\"'")
    first = bare.split()[0].lower().strip(_TRAILING) if bare.split() else ""
    return len(bare) >= 3 and first not in _NOT_A_VALUE and first not in ("none", "null", "nil", "n/a")


def _locate(text: str, kind: str, secret: str) -> Iterator[Finding]:
    start = text.find(secret)
    while start != -1:
        end = start + len(secret)
        if kind == "private-key":
            block = _PEM.search(text, max(0, start - 40)) or _PUTTY.search(text, start)
            if block is not None and block.start() <= start:
                start, end = block.start(), block.end()
        elif kind == "jwt":
            end = _JWT_TAIL.match(text, end).end()  # type: ignore[union-attr]
        yield Finding(kind, start, end)
        start = text.find(secret, end)


# -- memoir's own patterns ------------------------------------------------------------------------


def _own_matches(text: str, low: str) -> Iterator[Finding]:
    if "sk-" in text:
        for m in _ANTHROPIC.finditer(text):
            yield Finding("anthropic-key", m.start(), m.end())
        for m in _OPENAI.finditer(text):
            if not m.group().startswith("sk-ant-"):
                yield Finding("openai-key", m.start(), m.end())
    if "AIza" in text:
        for m in _GOOGLE.finditer(text):
            yield Finding("google-api-key", m.start(), m.end())
    if _DIGITS.search(text):
        for m in _CARD.finditer(text):
            if _luhn(m.group()):
                yield Finding("card-number", m.start(), m.end())
    if not any(part in low for part in _PHRASE_PARTS):
        return
    for m in _PHRASE.finditer(text):
        if _phrase_value(m, text):
            yield Finding("password", m.start("value"), m.start("value") + len(m.group("value").rstrip(_TRAILING)))


def _luhn(candidate: str) -> bool:
    digits = [int(c) for c in candidate if c.isdigit()]
    if len(set(digits)) < 2:
        return False  # one digit repeated is a placeholder, not a card
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _phrase_value(m: re.Match[str], text: str) -> bool:
    """Whether what follows "password is" is a credential rather than a description of one."""
    value = m.group("value").rstrip(_TRAILING)
    if not value:
        return False
    word = m.group("word").lower().replace(" ", "")
    if word.startswith("pin"):
        return bool(_PIN_VALUE.fullmatch(value))
    if value.lower() in _NOT_A_VALUE:
        return False
    if m.group("quote") or m.group("verb") in (":", "=", "->"):
        return len(value) >= 3
    if any(not c.isalpha() for c in value):
        return len(value) >= 4  # "hunter2", "S3cret!", "correct-horse"
    # "the password is swordfish." - a lone word that ends the clause.
    after = text[m.end("value") :].lstrip()
    return len(value) >= 4 and (not after or after[0] in _TRAILING or m.group("value")[-1] in _TRAILING)

