"""`lora serve`: the library as a local web page (optional extra ``serve``: Starlette, uvicorn, Jinja2)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from lorahub_cli.options import JsonOpt, Run

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def serve_command(
    run: Run,
    port: Annotated[int, typer.Option("--port", "-p", help="Port to listen on; 0 picks a free one.", min=0,
                                      max=65535)] = 8765,
    host: Annotated[str, typer.Option("--host", help="Address to bind. Anything but loopback (127.0.0.1) lets "
                                      "other machines read the library, and prints a warning.")] = "127.0.0.1",
    allow_edit: Annotated[bool, typer.Option("--allow-edit", help="Allow editing tags and trigger words from the "
                                             "page; each change needs the token printed at start-up.")] = False,
    json: JsonOpt = False,
) -> int:
    """Serve a web page over the library: a table of adapters with preview thumbnails (paginated, filtered by
    family, base label, tag and text), a page per adapter (facts and where each came from, copy buttons for
    <lora:name:w> and the trigger words, verdicts against saved bases, sources, previews and their recipes),
    and a JSON API with the objects of `lora list --json` (GET /api/adapters) and `lora show --json`
    (GET /api/adapters/NAME).

    The first line on stdout is the URL (with --json: one JSON object with "url" and, with --allow-edit,
    "edit_token"). Read-only unless --allow-edit; even then every change needs the printed token. Stop it with
    Ctrl-C.

    Examples:

      lora serve

      lora serve --port 0

      lora serve --allow-edit
    """
    import secrets

    from lorahub_cli.errors import MissingDependency

    try:
        import uvicorn

        from lorahub_cli.serve.app import LOOPBACK_HOSTS, create_app
    except ImportError as exc:
        raise MissingDependency(f"`lora serve` needs the serve extra ({exc.name} is not installed)",
                                hint='pip install "lorahub-cli[serve]"') from None

    loopback = host in LOOPBACK
    token = secrets.token_urlsafe(24) if allow_edit else None
    app = create_app(run.home, allow_edit=allow_edit, token=token, hosts=LOOPBACK_HOSTS if loopback else ["*"])
    sock = _bind(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{bound}/"
    if json:
        run.out.emit_json({"url": url, "edit_token": token} if token else {"url": url})
    else:
        run.out.stdout.write(url + "\n")     # first, and flushed: scripts read it to find a --port 0 server
        if token:
            run.out.stdout.write(f"edit token: {token}\n")
        run.out.stdout.flush()
    if not loopback:
        run.out.warn(f"serving on {host}: anyone who can reach this machine on port {bound} can read the library"
                     + (" and, with the token, edit it" if allow_edit else ""))
    run.out.info("read-only; stop with Ctrl-C" if not allow_edit else "editing allowed with the token; stop with Ctrl-C")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    server.run(sockets=[sock])
    return 0


def _bind(host: str, port: int):
    import socket

    from lorahub_cli.errors import UsageError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}",
                         hint="Pick another --port (0 picks a free one).") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
