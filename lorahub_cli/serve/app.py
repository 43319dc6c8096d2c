"""The Starlette application of `lora serve`: pages, the JSON API, preview files and the edit endpoints.

Every request opens the library afresh (a read is one SQLite snapshot), so the page shows what the command
line just changed. Adapters are named by library name or sha256 prefix only, never by a path on this machine.
"""

from __future__ import annotations

import hmac
import json
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from lorahub_cli.errors import (EXIT_UNREACHABLE, BadEditToken, EditingDisabled, LoraError, NotFound,
                                UsageError)
from lorahub_cli.serve import views
from lorahub_cli.serve.files import preview_file

HERE = Path(__file__).parent
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
# nothing from elsewhere, no inline script or style: an injected <script> in a card could not run even if
# escaping failed, and no other site can frame the page
CSP = ("default-src 'none'; img-src 'self'; media-src 'self'; script-src 'self'; style-src 'self'; "
       "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
TOKEN_HEADER = "x-lora-token"


class Server:
    """The state of one `lora serve`: the library's home, whether edits are allowed, and their token."""

    def __init__(self, home: Optional[Path], *, allow_edit: bool = False, token: Optional[str] = None) -> None:
        from jinja2 import Environment, FileSystemLoader, select_autoescape

        from registry.api import Registry

        self.home = home
        with Registry(home=home) as registry:
            self.library_home = Path(registry.home)   # the resolved home (its previews folder)
        self.allow_edit = allow_edit
        self.token = token
        self.templates = Environment(loader=FileSystemLoader(HERE / "templates"),
                                     autoescape=select_autoescape(default=True, default_for_string=True))

    def registry(self):
        from registry.api import Registry

        return Registry(home=self.home)

    def html(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        body = self.templates.get_template(template).render(allow_edit=self.allow_edit, **context)
        return HTMLResponse(body, status_code=status)


# --- reading -------------------------------------------------------------------------------------------
def _filters(request: Request) -> dict[str, Any]:
    q = request.query_params
    tag = q.get("tag") or ""
    return {"family": q.get("family") or None, "label": q.get("label") or None, "tags": [tag] if tag else [],
            "search": q.get("q") or None, "sort": q.get("sort") or "name", "reverse": q.get("reverse") == "1"}


def _int(request: Request, key: str, default: int, high: int) -> int:
    raw = request.query_params.get(key)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= high:
        raise UsageError(f"{key} must be a whole number from 1 to {high} (got {raw[:40]!r})")
    return int(raw)


def _page(server: Server, request: Request) -> tuple[dict, list, dict[str, str], dict]:
    filters = _filters(request)
    per_page = _int(request, "per_page", views.PER_PAGE, views.MAX_PER_PAGE)
    page = _int(request, "page", 1, 10**9)
    with server.registry() as registry:
        total, rows = registry.page(limit=per_page, offset=(page - 1) * per_page, **filters)
        thumbs = registry.first_previews([r.name for r in rows])
        choices = registry.distinct_values()
    return views.page_numbers(total, page, per_page), rows, thumbs, choices


def index(request: Request) -> Response:
    server: Server = request.app.state.server
    paging, rows, thumbs, choices = _page(server, request)
    from registry.records import FAMILIES

    q = request.query_params
    current = {k: q.get(k) or "" for k in ("family", "label", "tag", "q")}
    keep = {k: v for k, v in current.items() if v}
    return server.html("index.html", rows=rows, thumbs=thumbs, paging=paging, families=FAMILIES,
                       tags=choices["tags"], labels=choices["labels"], current=current,
                       query=lambda page: _query({**keep, "page": page}))


def _query(params: dict[str, Any]) -> str:
    from urllib.parse import urlencode

    return "?" + urlencode(params)


def _entry(server: Server, registry, name: str):
    entry = registry.find(name)  # a name or sha256 prefix; never a path on the server's machine
    if entry is None:
        raise registry.not_found(name)
    return entry


def entry_page(request: Request) -> Response:
    server: Server = request.app.state.server
    name = request.path_params["name"]
    with server.registry() as registry:
        e = _entry(server, registry, name)
        verdicts = views.verdicts(e, server.home, registry)
    return server.html("entry.html", e=e, facts=views.facts(e), triggers=views.triggers(e),
                       lora_tag=views.lora_tag(e.name, views.weight(e)), trigger_text=", ".join(e.trigger_words),
                       verdicts=verdicts, sources=[views.source_text(s) for s in e.sources],
                       previews=views.preview_views(e, server.library_home),
                       civitai=getattr(e, "civitai", None))


def api_list(request: Request) -> Response:
    """`lora list --json`, one page at a time: the same objects; X-Total-Count says how many match."""
    server: Server = request.app.state.server
    paging, rows, _thumbs, _choices = _page(server, request)
    return _json([r.to_dict() for r in rows], headers={"X-Total-Count": str(paging["total"])})


def api_show(request: Request) -> Response:
    """`lora show --json`."""
    server: Server = request.app.state.server
    with server.registry() as registry:
        return _json(_entry(server, registry, request.path_params["name"]))


def files(request: Request) -> Response:
    server: Server = request.app.state.server
    found = preview_file(server.library_home / "previews", request.path_params["path"])
    if found is None:
        raise NotFound("no such preview in this library")
    path, content_type = found
    return FileResponse(path, media_type=content_type, headers={"Cache-Control": "max-age=86400, immutable"})


# --- editing (--allow-edit and the start-up token) -------------------------------------------------------
async def _edit_body(request: Request) -> dict:
    server: Server = request.app.state.server
    if not server.allow_edit:
        raise EditingDisabled("this server is read-only")
    given = request.headers.get(TOKEN_HEADER, "")
    if not server.token or not hmac.compare_digest(given.encode(), server.token.encode()):
        raise BadEditToken("missing or wrong edit token" if given else "no edit token was sent")
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise UsageError("send the change as application/json")
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise UsageError("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise UsageError("the request body must be a JSON object")
    return body


def _strings(body: dict, key: str) -> list[str]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{key} must be a list of strings")
    return value


async def edit_tags(request: Request) -> Response:
    """{"add": [...], "remove": [...]} -> the entry (`lora tag NAME +a -b`)."""
    server: Server = request.app.state.server
    body = await _edit_body(request)
    with server.registry() as registry:
        e = _entry(server, registry, request.path_params["name"])
        return _json(registry.tag(e.name, add=_strings(body, "add"), remove=_strings(body, "remove")))


async def edit_triggers(request: Request) -> Response:
    """{"trigger_words": [...]} -> the entry (`lora set NAME --trigger ...`; an empty list resets them)."""
    server: Server = request.app.state.server
    body = await _edit_body(request)
    words = _strings(body, "trigger_words")
    with server.registry() as registry:
        e = _entry(server, registry, request.path_params["name"])
        if any(w.strip() for w in words):
            return _json(registry.set(e.name, trigger_words=words))
        return _json(registry.set(e.name, reset=["trigger_words"]))


async def edit_weight(request: Request) -> Response:
    """{"preferred_weight": w} -> the entry (`lora set NAME --weight w`; null resets it). The registry checks
    the value (a finite number from -10 to 10), so a string, true or NaN is refused as at the CLI."""
    server: Server = request.app.state.server
    body = await _edit_body(request)
    if "preferred_weight" not in body:
        raise UsageError("preferred_weight is required: a number, or null to reset it")
    weight = body["preferred_weight"]
    with server.registry() as registry:
        e = _entry(server, registry, request.path_params["name"])
        if weight is None:
            return _json(registry.set(e.name, reset=["preferred_weight"]))
        return _json(registry.set(e.name, preferred_weight=weight))


# --- responses and errors --------------------------------------------------------------------------------
def _default(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, (set, frozenset, tuple, Path)):
        return list(obj) if not isinstance(obj, Path) else str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _json(data: Any, status: int = 200, headers: Optional[dict[str, str]] = None) -> Response:
    body = json.dumps(data, ensure_ascii=False, default=_default)
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _status(err: LoraError) -> int:
    if isinstance(err, NotFound):
        return 404
    if isinstance(err, (EditingDisabled, BadEditToken)):
        return 403
    return 503 if err.exit_code == EXIT_UNREACHABLE else 400


def _errors(handler: Callable) -> Callable:
    """A LoraError becomes {"error": {...}} for the API and an error page for a person, with its HTTP status."""
    import inspect

    async def run(request: Request) -> Response:
        try:
            result = handler(request)
            return await result if inspect.isawaitable(result) else result
        except LoraError as err:
            if request.url.path.startswith("/api/") or request.method != "GET":
                return _json({"error": err.to_dict()}, status=_status(err))
            return request.app.state.server.html("error.html", status=_status(err), err=err)

    return run


def _security_headers(app):
    async def wrapped(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                            (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY")]
                message = {**message, "headers": headers}
            await send(message)

        await app(scope, receive, send_with_headers)

    return wrapped


def create_app(home: Optional[Path] = None, *, allow_edit: bool = False, token: Optional[str] = None,
               hosts: Sequence[str] = LOOPBACK_HOSTS) -> Any:
    """The ASGI application. ``hosts``: the Host headers answered (loopback by default, which also stops a
    DNS-rebinding page from reading the library through the browser); ``["*"]`` for any."""
    server = Server(home, allow_edit=allow_edit, token=token)
    routes = [
        Route("/", _errors(index)),
        Route("/adapters/{name}", _errors(entry_page)),
        Route("/api/adapters", _errors(api_list)),
        Route("/api/adapters/{name}", _errors(api_show)),
        Route("/api/adapters/{name}/tags", _errors(edit_tags), methods=["POST"]),
        Route("/api/adapters/{name}/triggers", _errors(edit_triggers), methods=["POST"]),
        Route("/api/adapters/{name}/weight", _errors(edit_weight), methods=["POST"]),
        Route("/previews/{path:path}", _errors(files)),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=list(hosts))])
    app.state.server = server
    return _security_headers(app)
