"""The dashboard: the person whose memories these are sees what the assistant remembers, and fixes it.

Served by the same process as everything else: `memoir ui` on 127.0.0.1 (its own small server),
and at `/ui` beside `/mcp` or `/sse` on `memoir serve --transport http|sse`, behind the same
Host/Origin check (server/access.py) and the same tokens.

Pages are rendered on the server (html.escape on every value: memory text is untrusted input, an
assistant stores what a web page said) and work without JavaScript; static/ui.js only adds
niceties. Charts are inline SVG drawn here. Every change goes through the store's own calls
(update, delete, clear, undo, undo_clear) and so lands in history like a tool's, with the actor
`dashboard` (undos: actor `undo`, source `dashboard`).

Who may look:
- While no token exists and the server may be open (a loopback bind; `memoir ui` always is), the
  visitor is the trusted local user, as on stdio: any user's memories (a user switch in the header).
- Once any token exists, a sign-in page takes a memoir token (`memoir token create USER`); the
  session keeps it and verifies it again on every request, so a revoked token ends the session at
  once. A user token sees only its user (another user's page: 403; another user's memory: 404);
  an admin token may switch users.

Safety: a strict Content-Security-Policy (no inline script or style, nothing from elsewhere),
frames refused, a session cookie that is HttpOnly and SameSite=Strict (Secure behind https),
a CSRF token in every form that changes something, checked against the session's.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import html
import secrets
import sys
import time
import webbrowser
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from mcp.server.transport_security import RequestBodyLimitMiddleware
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route

from memoir.memory import stats, transfer
from memoir.memory.errors import AccessDenied, CannotUndo, EventNotFound, InvalidArgument, MemoirError, MemoryNotFound
from memoir.memory.limits import parse_time
from memoir.memory.models import HistoryEvent, Memory, ScoredMemory
from memoir.memory.store import Change, Filters
from memoir.memory.tokens import Tokens
from memoir.tools.context import AppContext, Caller

if TYPE_CHECKING:
    from .settings import Settings

PREFIX = "/ui"
DEFAULT_UI_PORT = 8766
SESSION_COOKIE = "memoir_ui"
SESSION_IDLE = 12 * 3600.0  # seconds a session lasts unused
MAX_SESSIONS = 2000
MAX_BODY = 64 * 1024  # the largest form: a 2,000-character memory and its topics, with room
PAGE_SIZE = 20
SEARCH_LIMIT = 50
METHODS = ("hybrid", "keyword", "semantic", "last_n", "first_n")
STATIC_DIR = Path(__file__).parent / "static"
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
ACTORS = {
    "tool": "an MCP tool call",
    "extraction": "extraction",
    "cli": "the command line",
    "undo": "undo",
    "import": "an import",
    "dashboard": "this dashboard",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: with it, browsers send `Origin: null` on the forms' POSTs, which the Host/Origin check refuses.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
DASHBOARD_CHANGE = Change(actor="dashboard")
UNDO_CHANGE = Change(actor="undo", source="dashboard")


def h(value: object) -> str:
    """Escaped for HTML text and attribute values (quotes too)."""
    return html.escape(str(value), quote=True)


# -- sessions ------------------------------------------------------------------------------------


@dataclass
class Session:
    sid: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    token: str | None = None  # the memoir token signed in with; verified again on every request
    seen: float = field(default_factory=time.monotonic)


class Sessions:
    """In memory, per process: a restart signs everyone out (tokens stay valid; sign in again)."""

    def __init__(self) -> None:
        self._by_id: OrderedDict[str, Session] = OrderedDict()

    def get(self, sid: str | None) -> Session | None:
        self._expire()
        session = self._by_id.get(sid or "")
        if session is not None:
            session.seen = time.monotonic()
            self._by_id.move_to_end(session.sid)
        return session

    def new(self, token: str | None = None) -> Session:
        while len(self._by_id) >= MAX_SESSIONS:
            self._by_id.popitem(last=False)
        session = Session(token=token)
        self._by_id[session.sid] = session
        return session

    def drop(self, session: Session) -> None:
        self._by_id.pop(session.sid, None)

    def _expire(self) -> None:
        cutoff = time.monotonic() - SESSION_IDLE
        while self._by_id and next(iter(self._by_id.values())).seen < cutoff:
            self._by_id.popitem(last=False)


@dataclass
class Visit:
    """One request: its session, who is looking (None: must sign in), and whose memories it shows."""

    request: Request
    session: Session
    new_session: bool
    caller: Caller | None
    user: str = ""
    signed_in_as: str | None = None  # the token's description, for the header

    def url(self, path: str, **params: object) -> str:
        """A dashboard URL for the user shown (the `user` parameter always travels along)."""
        query = {"user": self.user, **{k: v for k, v in params.items() if v not in (None, "", [])}}
        return f"{PREFIX}{path}?{urlencode(query, doseq=True)}"


class Problem(Exception):
    """A page-level error: status and a one-line message with the fix."""

    def __init__(self, status: int, title: str, text: str) -> None:
        super().__init__(text)
        self.status, self.title, self.text = status, title, text


# -- the dashboard -------------------------------------------------------------------------------


class Dashboard:
    def __init__(self, app: AppContext, tokens: Tokens, *, open_allowed: bool, secure_cookie: bool = False) -> None:
        self.app = app
        self.store = app.store
        self.tokens = tokens
        self.open_allowed = open_allowed
        self.secure_cookie = secure_cookie
        self.sessions = Sessions()
        self.static = {p.name: (p.read_bytes(), STATIC_TYPES[p.suffix]) for p in STATIC_DIR.iterdir() if p.suffix in STATIC_TYPES}

    def routes(self) -> list[BaseRoute]:
        """`/ui` and everything under it, to put in front of another app's routes."""
        page = self._page
        inner = [
            Route("/", page(self.index)),
            Route("/m/{memory_id}", page(self.memory_page)),
            Route("/changes", page(self.changes)),
            Route("/export", page(self.export)),
            Route("/login", page(self.login, open_page=True), methods=["GET", "POST"]),
            Route("/logout", page(self.logout, open_page=True), methods=["POST"]),
            Route("/m/{memory_id}/edit", page(self.edit), methods=["POST"]),
            Route("/m/{memory_id}/delete", page(self.delete), methods=["POST"]),
            Route("/undo", page(self.undo), methods=["POST"]),
            Route("/undo-clear", page(self.undo_clear), methods=["POST"]),
            Route("/clear", page(self.clear), methods=["POST"]),
            Route("/static/{name}", self.static_file),
        ]
        return [Route(PREFIX, lambda _: RedirectResponse(f"{PREFIX}/", 307)), Mount(PREFIX, app=RequestBodyLimitMiddleware(Starlette(routes=inner), MAX_BODY))]

    # -- plumbing ---------------------------------------------------------------------------------

    def _page(self, handler: Callable[[Visit], Awaitable[Response]], *, open_page: bool = False) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            visit = await self._visit(request)
            try:
                if request.method == "POST":
                    form = await request.form(max_files=0, max_fields=20)
                    request.state.form = form
                    sent = str(form.get("csrf", ""))
                    if visit.new_session or not hmac.compare_digest(sent.encode(), visit.session.csrf.encode()):
                        raise Problem(403, "This form is stale or was not sent from this dashboard",
                                      "Reload the page and send it again.")
                if visit.caller is None and not open_page:
                    if request.method == "GET":
                        response: Response = RedirectResponse(f"{PREFIX}/login?{urlencode({'next': _local(str(request.url.path) + ('?' + request.url.query if request.url.query else ''))})}", 303)
                    else:
                        raise Problem(401, "Sign in first", "Your session ended; sign in with your memoir token again.")
                else:
                    if visit.caller is not None:
                        visit.user = self._user(visit, _param(request, "user"))
                    response = await handler(visit)
            except Problem as problem:
                response = self._render(visit, problem.title, f'<p class="error" role="alert">{h(problem.text)}</p>'
                                        f'<p><a href="{PREFIX}/">Back to the memories</a></p>', problem.status)
            except MemoirError as exc:
                status = 404 if isinstance(exc, MemoryNotFound | EventNotFound) else 403 if isinstance(exc, AccessDenied) else 409 if isinstance(exc, CannotUndo) else 400
                response = self._render(visit, "That did not work", f'<p class="error" role="alert">{h(exc)}</p>'
                                        f'<p><a href="{h(visit.url("/")) if visit.user else PREFIX + "/"}">Back to the memories</a></p>', status)
            for key, value in HEADERS.items():
                response.headers.setdefault(key, value)
            if visit.new_session and not getattr(request.state, "signed_in", False):
                self._set_cookie(response, visit.session)
            return response

        return endpoint

    async def _visit(self, request: Request) -> Visit:
        session = self.sessions.get(request.cookies.get(SESSION_COOKIE))
        new = session is None
        if session is None:
            session = self.sessions.new()
        caller, signed_in_as = None, None
        if session.token is not None:
            info = await self.tokens.verify(session.token)
            if info is None:
                session.token = None  # revoked since: the session ends with it
            else:
                caller = Caller(user_id=info.user_id, admin=info.admin, token_id=info.token_id)
                signed_in_as = ("admin" if info.admin else f"user '{info.user_id}'") + f" (token {info.token_id})"
        elif self.open_allowed and not await self.tokens.exist():
            caller = Caller()  # open local server: the trusted local user, as on stdio
        return Visit(request, session, new, caller, signed_in_as=signed_in_as)

    def _user(self, visit: Visit, requested: str | None) -> str:
        caller = visit.caller
        assert caller is not None
        if requested:
            try:
                requested = self.app.limits.user_id(requested)
            except InvalidArgument as exc:
                raise Problem(400, "Not a user id", str(exc)) from None
        if caller.trusted:
            return requested or caller.user_id or self.app.default_user_id
        if requested and requested != caller.user_id:
            raise Problem(
                403, "Not your memories",
                f"This session's token belongs to user '{caller.user_id}' and cannot open '{requested}''s memories; "
                "sign in with that user's token (or an admin token).",
            )
        return caller.user_id  # type: ignore[return-value]

    def _set_cookie(self, response: Response, session: Session) -> None:
        response.set_cookie(SESSION_COOKIE, session.sid, path=PREFIX, httponly=True, samesite="strict", secure=self.secure_cookie)

    async def static_file(self, request: Request) -> Response:
        found = self.static.get(request.path_params["name"])
        if found is None:
            return Response("not found", 404, media_type="text/plain")
        body, kind = found
        return Response(body, media_type=kind, headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"})

    def _form(self, visit: Visit, key: str, default: str = "") -> str:
        return str(visit.request.state.form.get(key, default))

    def _back(self, visit: Visit, path: str, **params: object) -> Response:
        return RedirectResponse(visit.url(path, **params), 303)

    # -- pages ----------------------------------------------------------------------------------

    async def index(self, visit: Visit) -> Response:
        q = visit.request.query_params
        query = (q.get("q") or "").strip()
        method = q.get("method") or ""
        if method and method not in METHODS:
            raise Problem(400, "Unknown search method", f"method must be one of {', '.join(METHODS)}, not {method[:40]!r}")
        topics = tuple(dict.fromkeys(t.strip().lower() for t in q.getlist("topic") if t.strip()))[:16]
        since, until = q.get("from") or "", q.get("to") or ""
        filters = Filters(topics=topics, created_after=_day(since, "from"), created_before=_day(until, "to", next_day=True))
        counts = await stats.topic_counts(self.store, visit.user)
        days = await stats.per_day(self.store, visit.user)
        total = await self.store.count(visit.user)
        keep = {"q": query, "method": method, "topic": list(topics), "from": since, "to": until}

        searching = bool(query) or method in ("last_n", "first_n")
        notice, cursor_link = "", ""
        if searching:
            try:
                outcome = await self.app.retriever.search(
                    visit.user, query or None, method=method or None, limit=SEARCH_LIMIT, filters=filters
                )
            except MemoirError as exc:
                results, ran = [], ""
                notice = f'<p class="error" role="alert">{h(exc)}</p>'
            else:
                results, ran = outcome.results, outcome.retrieval_method
                asked = method or "hybrid"
                fell_back = f" (asked for {h(asked)}: it fell back)" if query and ran != asked and method else ""
                notice = f'<p class="meta" id="search-summary">{len(results)} found by <b>{h(ran)}</b>{fell_back}; higher scores first.</p>'
            items: Iterable[Memory] = results
        else:
            page = await self.store.list(visit.user, limit=PAGE_SIZE, cursor=q.get("cursor") or None, filters=filters)
            items = page.memories
            if page.next_cursor:
                cursor_link = f'<p><a class="button" rel="next" href="{h(visit.url("/", **keep, cursor=page.next_cursor))}">Older memories</a></p>'
        rows = "".join(self._memory_row(visit, m) for m in items) or '<li class="empty">No memories here yet.</li>'

        chips = "".join(
            f'<a class="chip{" on" if t in topics else ""}" href="{h(visit.url("/", **{**keep, "topic": _toggle(topics, t)}))}"'
            f' aria-pressed="{"true" if t in topics else "false"}">{h(t)} <span class="n">{n}</span></a>'
            for t, n in counts[:24]
        )
        hidden_topics = "".join(f'<input type="hidden" name="topic" value="{h(t)}">' for t in topics)
        options = "".join(
            f'<option value="{m}"{" selected" if m == method else ""}>{m or "hybrid (default)"}</option>' for m in ("", *METHODS)
        )
        body = f"""
<form class="search" method="get" action="{PREFIX}/" role="search">
<input type="hidden" name="user" value="{h(visit.user)}">{hidden_topics}
<input type="search" name="q" value="{h(query)}" placeholder="Search the memories" aria-label="Search" id="q" maxlength="1000">
<select name="method" aria-label="Retrieval method" id="method">{options}</select>
<label>from <input type="date" name="from" value="{h(since)}"></label>
<label>to <input type="date" name="to" value="{h(until)}"></label>
<button type="submit">Search</button>
{f'<a href="{h(visit.url("/"))}">Clear filters</a>' if any((query, method, topics, since, until)) else ""}
</form>
<div class="chips" aria-label="Topics">{chips}</div>
<div class="cols"><section class="main">
{notice}
<ol class="memories" id="memories">{rows}</ol>
{cursor_link}
</section>
<aside>
<h2>Topics</h2>{_bar_chart(counts[:10])}
<h2>Memories over time</h2>{_time_chart(days)}
<p class="meta">{total} memories in all (including superseded ones).</p>
<h2>Export</h2>
<p><a class="button" href="{h(visit.url("/export"))}" download>Download as JSON Lines</a></p>
<h2>Forget everything</h2>
<form method="post" action="{h(visit.url("/clear"))}" class="danger" data-confirm="Delete every memory of {h(visit.user)}? You can undo it from Recent changes.">
{self._csrf(visit)}
<label><input type="checkbox" name="confirm" value="yes" required> delete all of {h(visit.user)}'s memories</label>
<button type="submit">Delete all</button>
</form>
</aside></div>"""
        return self._render(visit, "Memories", body, note=self._note(visit))

    def _memory_row(self, visit: Visit, m: Memory) -> str:
        score = f'<span class="score" title="score">{m.score:.3g}</span>' if isinstance(m, ScoredMemory) else ""
        superseded = ' <span class="badge">superseded</span>' if m.valid_to else ""
        return (
            f'<li class="memory" data-id="{h(m.memory_id)}">{score}'
            f'<a class="text" href="{h(visit.url("/m/" + quote(m.memory_id)))}">{h(m.memory)}</a>{superseded}'
            f'<div class="meta">{_topics(m.topics)}<time datetime="{h(m.created_at)}">{h(_when(m.created_at))}</time></div></li>'
        )

    async def memory_page(self, visit: Visit) -> Response:
        memory_id = visit.request.path_params["memory_id"]
        events = await self.store.history(memory_id, user_id=visit.user)
        try:
            memory: Memory | None = await self.store.get(visit.user, memory_id)
        except (MemoryNotFound, InvalidArgument):
            memory = None
            if not events:
                raise MemoryNotFound(memory_id, visit.user) from None
        here = "/m/" + quote(memory_id)
        if memory is None:
            top = '<p class="gone">This memory is deleted. Its history is below: undo the deletion to bring it back.</p>'
        else:
            validity = (
                f'<p class="meta">Superseded on {h(_when(memory.valid_to))} by '
                f'<a href="{h(visit.url("/m/" + quote(memory.superseded_by or "")))}">{h(memory.superseded_by)}</a>.</p>'
                if memory.valid_to else ""
            )
            source = f'<details><summary>The text it came from</summary><pre>{h(memory.input)}</pre></details>' if memory.input else ""
            top = f"""
<blockquote class="memory-text" id="memory-text">{h(memory.memory)}</blockquote>
<div class="meta">{_topics(memory.topics)} created {h(_when(memory.created_at))}, changed {h(_when(memory.updated_at))}
<code>{h(memory.memory_id)}</code></div>{validity}{source}
<form method="post" action="{h(visit.url(here + "/edit"))}" class="edit" id="edit">
{self._csrf(visit)}
<label for="memory">Text</label>
<textarea id="memory" name="memory" rows="3" maxlength="{self.app.limits.memory_max_chars}" required>{h(memory.memory)}</textarea>
<label for="topics">Topics, separated by commas</label>
<input id="topics" name="topics" value="{h(", ".join(memory.topics))}">
<p><button type="submit">Save</button></p>
</form>
<form method="post" action="{h(visit.url(here + "/delete"))}" class="inline" data-confirm="Delete this memory? You can undo it.">
{self._csrf(visit)}<button type="submit" class="delete" id="delete">Delete this memory</button></form>"""
        timeline = "".join(self._event_item(visit, e, here, with_memory=False) for e in reversed(events))
        body = f"""{top}
<h2>History</h2>
<ol class="timeline" id="timeline">{timeline}</ol>"""
        return self._render(visit, "Memory", body, note=self._note(visit))

    def _event_item(self, visit: Visit, e: HistoryEvent, back: str, *, with_memory: bool) -> str:
        what = {
            "add": "added", "update": "changed", "delete": "deleted", "clear": "deleted by a clear", "restore": "restored",
        }[e.operation]
        if e.operation == "update" and e.before and e.after and e.before.valid_to != e.after.valid_to:
            what = "superseded" if e.after.valid_to else "made current again"
        who = ACTORS.get(e.actor, e.actor)
        source = e.source
        if e.actor == "undo" and source and len(source) <= 40 and "\n" not in source:
            who, source = f"undo ({'in this dashboard' if source == 'dashboard' else 'from ' + source})", None
        parts = [f'<span class="op op-{h(e.operation)}">{h(what)}</span> by <b>{h(who)}</b>',
                 f'<time datetime="{h(e.created_at)}">{h(_when(e.created_at))}</time>', f'<span class="meta">event {e.event_id}</span>']
        if e.undoes:
            parts.append(f'<span class="meta">undoing event {e.undoes}</span>')
        lines = [" ".join(parts)]
        if with_memory:
            shown = e.after or e.before
            if shown is not None:
                lines.append(f'<a class="text" href="{h(visit.url("/m/" + quote(e.memory_id)))}">{h(shown.memory)}</a>')
        elif e.before is not None and e.after is not None and (e.before.memory, e.before.topics) != (e.after.memory, e.after.topics):
            lines.append(
                f'<div class="diff"><del>{h(e.before.memory)}</del> {_topics(e.before.topics)}'
                f'<br><ins>{h(e.after.memory)}</ins> {_topics(e.after.topics)}</div>'
            )
        elif e.after is not None and e.operation in ("add", "restore"):
            lines.append(f'<div class="diff"><ins>{h(e.after.memory)}</ins> {_topics(e.after.topics)}</div>')
        if e.reason:
            lines.append(f'<p class="reason">Reason: {h(e.reason)}</p>')
        if source:
            lines.append(f'<details class="source"><summary>Source</summary><pre>{h(source)}</pre></details>')
        lines.append(
            f'<form method="post" action="{h(visit.url("/undo", back=back))}" class="inline">{self._csrf(visit)}'
            f'<input type="hidden" name="event_id" value="{e.event_id}"><button type="submit" class="small">Undo</button></form>'
        )
        return f'<li class="event" data-event="{e.event_id}">{"".join(lines)}</li>'

    async def changes(self, visit: Visit) -> Response:
        events = await self.store.user_history(visit.user, limit=200)
        items: list[str] = []
        clears: dict[tuple[str, str], list[HistoryEvent]] = {}
        for e in events:
            if e.operation == "clear":
                key = (e.created_at, e.actor)
                if key not in clears:
                    clears[key] = []
                    items.append(f"clear:{len(clears) - 1}")
                clears[key].append(e)
            else:
                items.append(self._event_item(visit, e, "/changes", with_memory=True))
        groups = list(clears.values())
        out = []
        for item in items:
            if item.startswith("clear:"):
                group = groups[int(item[6:])]
                first = group[0]
                out.append(
                    f'<li class="event clear"><span class="op op-clear">cleared {len(group)} memories</span> by '
                    f'<b>{h(ACTORS.get(first.actor, first.actor))}</b> <time datetime="{h(first.created_at)}">{h(_when(first.created_at))}</time>'
                    f'<form method="post" action="{h(visit.url("/undo-clear"))}" class="inline">{self._csrf(visit)}'
                    f'<input type="hidden" name="event_id" value="{first.event_id}">'
                    f'<button type="submit" class="small">Undo the whole clear</button></form>'
                    f'<details><summary>The memories</summary><ul>'
                    + "".join(f'<li><a href="{h(visit.url("/m/" + quote(e.memory_id)))}">{h(e.before.memory if e.before else e.memory_id)}</a></li>' for e in group)
                    + "</ul></details></li>"
                )
            else:
                out.append(item)
        body = f'<p class="meta">The latest 200 changes, newest first.</p><ol class="timeline" id="changes">{"".join(out) or "<li>No changes yet.</li>"}</ol>'
        return self._render(visit, "Recent changes", body, note=self._note(visit))

    async def export(self, visit: Visit) -> Response:
        lines = transfer.export_lines(self.store, visit.user, history=True)

        async def body():
            async for line in lines:
                yield line + "\n"

        name = f"memoir-{visit.user}.jsonl".replace(":", "_")
        return StreamingResponse(body(), media_type="application/x-ndjson",
                                 headers={"Content-Disposition": f'attachment; filename="{name}"'})

    async def login(self, visit: Visit) -> Response:
        request = visit.request
        target = _local(_param(request, "next") or f"{PREFIX}/")
        error = ""
        if request.method == "POST":
            token = self._form(visit, "token").strip()[:300]
            info = await self.tokens.verify(token) if token else None
            if info is None:
                error = "That is not a current memoir token of this server. Create one with `memoir token create YOUR_USER`."
            else:
                self.sessions.drop(visit.session)  # a new session id on sign-in: no fixation
                session = self.sessions.new(token)
                response = RedirectResponse(target, 303)
                self._set_cookie(response, session)
                request.state.signed_in = True
                return response
        elif visit.caller is not None and visit.session.token is None:
            return RedirectResponse(target, 303)  # open server: nothing to sign in to
        body = f"""
<p>This server keeps memories for several people. Sign in with your memoir token
(<code>memoir token create YOUR_USER</code> prints one).</p>
<form method="post" action="{PREFIX}/login" class="login">{self._csrf(visit)}
<input type="hidden" name="next" value="{h(target)}">
<label for="token">Your memoir token</label>
<input id="token" name="token" type="password" autocomplete="off" spellcheck="false" required autofocus>
{f'<p class="error" role="alert">{h(error)}</p>' if error else ''}
<p><button type="submit">Sign in</button></p></form>"""
        return self._render(visit, "Sign in", body, 401 if error else 200, nav=False)

    async def logout(self, visit: Visit) -> Response:
        self.sessions.drop(visit.session)
        response = RedirectResponse(f"{PREFIX}/login", 303)
        response.delete_cookie(SESSION_COOKIE, path=PREFIX)
        visit.request.state.signed_in = True  # no new cookie
        return response

    # -- changes ------------------------------------------------------------------------------

    async def edit(self, visit: Visit) -> Response:
        memory_id = visit.request.path_params["memory_id"]
        current = await self.store.get(visit.user, memory_id)
        text = self._form(visit, "memory").replace("\r\n", "\n")
        topics = [t.strip() for t in self._form(visit, "topics").split(",") if t.strip()]
        new_text = None if text.strip() == current.memory else text
        new_topics = None if [t.lower() for t in topics] == current.topics else topics
        if new_text is None and new_topics is None:
            return self._back(visit, "/m/" + quote(memory_id), note="unchanged")
        await self.store.update(visit.user, memory_id, memory=new_text, topics=new_topics, change=DASHBOARD_CHANGE)
        return self._back(visit, "/m/" + quote(memory_id), note="saved")

    async def delete(self, visit: Visit) -> Response:
        memory_id = visit.request.path_params["memory_id"]
        await self.store.delete(visit.user, memory_id, change=DASHBOARD_CHANGE)
        mine = [e for e in await self.store.history(memory_id, user_id=visit.user) if e.operation == "delete"]
        return self._back(visit, "/", note="deleted", event=mine[-1].event_id if mine else None)

    async def undo(self, visit: Visit) -> Response:
        event = await self.store.undo(_event_id(self._form(visit, "event_id")), user_id=visit.user, change=UNDO_CHANGE)
        # Back to the list of changes it was undone from, else to the memory's page (which shows a deleted one too).
        back = "/changes" if _param(visit.request, "back") == "/changes" else "/m/" + quote(event.memory_id)
        return self._back(visit, back, note="undone")

    async def undo_clear(self, visit: Visit) -> Response:
        restored = await self.store.undo_clear(visit.user, _event_id(self._form(visit, "event_id")), change=UNDO_CHANGE)
        return self._back(visit, "/", note="restored", n=len(restored))

    async def clear(self, visit: Visit) -> Response:
        if self._form(visit, "confirm") != "yes":
            raise Problem(400, "Not cleared", "Tick the box to confirm that every memory of this user should go.")
        before = await self.store.user_history(visit.user, limit=1)
        n = await self.store.clear(visit.user, change=DASHBOARD_CHANGE)
        after = await self.store.user_history(visit.user, limit=1)
        event = after[0].event_id if after and (not before or after[0].event_id != before[0].event_id) and n else None
        return self._back(visit, "/", note="cleared", n=n, event=event)

    # -- rendering ----------------------------------------------------------------------------

    def _csrf(self, visit: Visit) -> str:
        return f'<input type="hidden" name="csrf" value="{h(visit.session.csrf)}">'

    def _note(self, visit: Visit) -> str:
        q = visit.request.query_params
        note, n, event = q.get("note"), q.get("n", ""), q.get("event", "")
        n = n if n.isdigit() else "0"
        undo = ""
        if event.isdigit():
            action = "/undo-clear" if note == "cleared" else "/undo"
            undo = (
                f'<form method="post" action="{h(visit.url(action))}" class="inline">{self._csrf(visit)}'
                f'<input type="hidden" name="event_id" value="{event}"><button type="submit" id="undo-now">Undo</button></form>'
            )
        text = {
            "saved": "Saved.", "unchanged": "Nothing to save: text and topics are as they were.",
            "deleted": "Memory deleted.", "undone": "Undone.", "restored": f"Restored {n} memories.",
            "cleared": f"Deleted all {n} memories.",
        }.get(note or "")
        return f'<div class="note" role="status" id="note">{h(text)} {undo}</div>' if text else ""

    def _render(self, visit: Visit, title: str, body: str, status: int = 200, *, note: str = "", nav: bool = True) -> HTMLResponse:
        header = ""
        if nav and visit.caller is not None and visit.user:
            switch = ""
            if visit.caller.trusted:
                switch = (
                    f'<form method="get" action="{PREFIX}/" class="switch"><label>user '
                    f'<input name="user" value="{h(visit.user)}" size="12" aria-label="User"></label>'
                    f'<button type="submit" class="small">Open</button></form>'
                )
            who = ""
            if visit.session.token is not None:
                who = (
                    f'<form method="post" action="{PREFIX}/logout" class="switch">{self._csrf(visit)}'
                    f'<span class="meta">{h(visit.signed_in_as or "")}</span> <button type="submit" class="small">Sign out</button></form>'
                )
            header = (
                f'<nav><a class="brand" href="{h(visit.url("/"))}">memoir</a>'
                f'<a href="{h(visit.url("/"))}">Memories</a><a href="{h(visit.url("/changes"))}">Recent changes</a>'
                f'<span class="who">memories of <b id="user">{h(visit.user)}</b></span>{switch}{who}</nav>'
            )
        page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin"><title>{h(title)} - memoir</title>
<link rel="stylesheet" href="{PREFIX}/static/ui.css"><script src="{PREFIX}/static/ui.js" defer></script></head>
<body>{header}<main><h1>{h(title)}</h1>{note}{body}</main></body></html>"""
        return HTMLResponse(page, status_code=status)


# -- helpers -------------------------------------------------------------------------------------


def _param(request: Request, key: str) -> str | None:
    form = getattr(request.state, "form", None)
    if form is not None and key in form:
        return str(form.get(key))
    return request.query_params.get(key)


def _local(target: str) -> str:
    """Only a path of this dashboard: never a redirect elsewhere."""
    return target if target.startswith(PREFIX + "/") and not target.startswith(PREFIX + "//") and "\\" not in target else f"{PREFIX}/"


def _event_id(value: str) -> int:
    if not value.strip().isdigit():
        raise Problem(400, "Which change?", "event_id must be the number of a history event; use the Undo buttons.")
    return int(value)


def _day(value: str, name: str, *, next_day: bool = False) -> str | None:
    if not value:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise Problem(400, "Not a date", f"{name} must be a date like 2026-01-31, not {value[:40]!r}") from None
    return parse_time((day + timedelta(days=1 if next_day else 0)).isoformat(), name)


def _toggle(topics: tuple[str, ...], topic: str) -> list[str]:
    return [t for t in topics if t != topic] if topic in topics else [*topics, topic]


def _topics(topics: list[str]) -> str:
    return "".join(f'<span class="chip small">{h(t)}</span>' for t in topics)


def _when(stamp: str | None) -> str:
    """`2026-05-01 14:03 UTC` from the store's ISO form."""
    return "" if not stamp else stamp[:16].replace("T", " ") + " UTC"


def _bar_chart(counts: list[tuple[str, int]]) -> str:
    """Horizontal bars, one per topic, as inline SVG (presentation attributes only: CSP allows no inline style)."""
    if not counts:
        return '<p class="meta">No topics yet.</p>'
    top = max(n for _, n in counts)
    row, width, label = 22, 300, 110
    bars = []
    for i, (topic, n) in enumerate(counts):
        y = i * row
        w = max(2, round((width - label - 40) * n / top))
        shown = topic if len(topic) <= 16 else topic[:15] + "…"
        bars.append(
            f'<text x="{label - 6}" y="{y + 15}" text-anchor="end">{h(shown)}</text>'
            f'<rect x="{label}" y="{y + 4}" width="{w}" height="14" rx="2" class="bar"><title>{h(topic)}: {n}</title></rect>'
            f'<text x="{label + w + 4}" y="{y + 15}" class="count">{n}</text>'
        )
    return (
        f'<svg class="chart" role="img" aria-label="memories per topic" viewBox="0 0 {width} {row * len(counts)}"'
        f' width="{width}" height="{row * len(counts)}">{"".join(bars)}</svg>'
    )


def _time_chart(days: list[tuple[str, int]]) -> str:
    """Memories created per day (or per month, over more than 60 days) as inline SVG columns."""
    if not days:
        return '<p class="meta">Nothing yet.</p>'
    first, last = date.fromisoformat(days[0][0]), date.fromisoformat(days[-1][0])
    by_day = dict(days)
    if (last - first).days <= 60:
        start = min(first, last - timedelta(days=13))
        buckets = [((start + timedelta(d)).isoformat(), by_day.get((start + timedelta(d)).isoformat(), 0))
                   for d in range((last - start).days + 1)]
    else:
        months: dict[str, int] = {}
        for day, n in days:
            months[day[:7]] = months.get(day[:7], 0) + n
        buckets = []
        y, m = first.year, first.month
        while (y, m) <= (last.year, last.month):
            key = f"{y:04d}-{m:02d}"
            buckets.append((key, months.get(key, 0)))
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    width, height = 300, 90
    step = width / len(buckets)
    top = max(n for _, n in buckets) or 1
    cols = []
    for i, (key, n) in enumerate(buckets):
        hgt = round((height - 20) * n / top)
        cols.append(
            f'<rect x="{i * step + 1:.1f}" y="{height - 16 - hgt}" width="{max(step - 2, 1):.1f}" height="{hgt}" class="bar">'
            f'<title>{h(key)}: {n}</title></rect>'
        )
    axis = (
        f'<text x="0" y="{height - 2}">{h(buckets[0][0])}</text>'
        f'<text x="{width}" y="{height - 2}" text-anchor="end">{h(buckets[-1][0])}</text>'
    )
    return (
        f'<svg class="chart" role="img" aria-label="memories created over time" viewBox="0 0 {width} {height}"'
        f' width="{width}" height="{height}">{"".join(cols)}{axis}</svg>'
    )


# -- `memoir ui` ---------------------------------------------------------------------------------


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add `memoir ui` to the CLI's sub-commands."""
    ui = sub.add_parser("ui", parents=parents, help="the dashboard: see and fix the memories in a browser (127.0.0.1)")
    ui.add_argument("--port", type=int, default=DEFAULT_UI_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_UI_PORT}; 0 = any)")
    ui.add_argument("--open", action="store_true", help="open the dashboard in the default browser")
    ui.set_defaults(run=_run_ui)


async def _run_ui(settings: Settings, args: argparse.Namespace) -> int:
    from .app import running_app
    from .transports import exit_now

    settings = replace(settings, host="127.0.0.1", port=args.port)
    async with running_app(settings) as app:
        await serve_ui(app, settings, open_browser=args.open)
    exit_now(0)
    return 0


async def serve_ui(app: AppContext, settings: Settings, *, open_browser: bool = False) -> None:
    """The dashboard alone, on `settings.host` (127.0.0.1), until SIGTERM/SIGINT."""
    import uvicorn

    from .access import HostCheck, host_rule
    from .transports import InFlight, _Server, bind

    sock = bind(settings)
    try:
        port = sock.getsockname()[1]
        url = f"http://{settings.host}:{port}{PREFIX}/"
        dashboard = Dashboard(app, Tokens(app.store), open_allowed=True)
        starlette = Starlette(routes=[Route("/", lambda _: RedirectResponse(f"{PREFIX}/", 307)), *dashboard.routes()])
        rule = host_rule(settings.host, sock.getsockname()[0], settings.access.allowed_hosts)
        in_flight = InFlight(starlette if rule is None else HostCheck(starlette, rule))
        print(f"memoir: serving ui on {url}", file=sys.stderr, flush=True)
        print(url, flush=True)
        if open_browser:
            asyncio.get_running_loop().run_in_executor(None, webbrowser.open, url)
        config = uvicorn.Config(in_flight, log_level=settings.log_level.lower(), lifespan="off", access_log=False)
        await _Server(config, in_flight, 10.0).serve(sockets=[sock])
    finally:
        sock.close()
