"""`lora serve` over plain HTTP (a real server process): the JSON API mirrors --json, pagination and filters,
file endpoints refuse traversal and serve the right content type, HTML from cards is escaped, and editing
needs --allow-edit plus the token."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
from urllib.parse import urlsplit

import pytest

from tests.serve.conftest import EDITED, INJECTION, PREVIEWED, Served


def _json(body: bytes):
    return json.loads(body.decode())


def test_first_stdout_line_is_the_url_and_it_binds_loopback(server):
    parts = urlsplit(server.url)
    assert parts.scheme == "http" and parts.hostname == "127.0.0.1" and parts.port > 0
    status, headers, body = server.get("/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in headers["content-security-policy"]


def test_api_mirrors_list_and_show_json(server, library, run_cli):
    env = {"LORAHUB_HOME": str(library.home)}
    listed = run_cli("list", "--json", env=env).json()
    status, headers, body = server.get("/api/adapters")
    assert status == 200 and headers["content-type"] == "application/json"
    assert _json(body) == listed and headers["x-total-count"] == str(len(listed)) == "3"
    shown = run_cli("show", PREVIEWED, "--json", env=env).json()
    status, _, body = server.get(f"/api/adapters/{PREVIEWED}")
    assert status == 200 and _json(body) == shown
    assert _json(body)["previews"][0]["path"] == library.preview_path


def test_api_pages_and_filters_on_the_server(server):
    status, headers, body = server.get("/api/adapters?per_page=2")
    assert headers["x-total-count"] == "3" and [a["name"] for a in _json(body)] == ["style-sd1-0", "style-sd1-2"]
    _, _, body = server.get("/api/adapters?per_page=2&page=2")
    assert [a["name"] for a in _json(body)] == ["style-sdxl-1"]
    _, headers, body = server.get("/api/adapters?family=sdxl")
    assert headers["x-total-count"] == "1" and _json(body)[0]["family"] == "sdxl"
    _, headers, _ = server.get("/api/adapters?tag=photo&family=sd1")
    assert headers["x-total-count"] == "1"
    _, headers, body = server.get("/api/adapters?label=pony")
    assert [a["name"] for a in _json(body)] == ["style-sdxl-1"] and _json(body)[0]["label"] == "Pony"
    _, headers, body = server.get("/api/adapters?q=mystyle")
    assert [a["name"] for a in _json(body)] == [PREVIEWED]


@pytest.mark.parametrize("query, code", [("family=martian", "usage"), ("page=0", "usage"),
                                         ("per_page=100000", "usage"), ("page=x", "usage")])
def test_bad_query_is_a_usage_error(server, query, code):
    status, headers, body = server.get(f"/api/adapters?{query}")
    assert status == 400 and _json(body)["error"]["code"] == code


def test_unknown_adapter_is_404_with_a_code_and_never_a_path_lookup(server, library):
    status, _, body = server.get("/api/adapters/nope")
    assert status == 404 and _json(body)["error"]["code"] == "not-found"
    # a file next to the server is not looked up by its bytes (the CLI's path fallback is not served)
    status, _, body = server.get("/api/adapters/" + "registry.db")
    assert status == 404


def _raw_get(url: str, path: str, host: str | None = None) -> tuple[int, bytes]:
    """GET exactly ``path`` (no client-side normalisation of .. or %2F)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    conn.putrequest("GET", path, skip_host=host is not None)
    if host is not None:
        conn.putheader("Host", host)
    conn.endheaders()
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


def test_preview_is_served_with_its_content_type(server, library):
    status, headers, body = server.get("/" + library.preview_path)
    assert status == 200 and headers["content-type"] == "image/png"
    assert body == (library.home / library.preview_path).read_bytes()
    assert headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", [
    "/previews/../registry.db", "/previews/..%2fregistry.db", "/previews/%2e%2e/%2e%2e/etc/passwd",
    "/previews/../../../../etc/passwd", "/previews//etc/passwd", "/previews/%2Fetc%2Fpasswd",
    "/previews/00/../../registry.db", "/static/../app.py", "/static/..%2fapp.py", "/static/%2e%2e/files.py",
    "/previews/be/" + "0" * 64 + ".py", "/previews/objects", "/objects/",
])
def test_path_traversal_is_refused(server, library, path):
    secret = (library.home / "registry.db").read_bytes()[:16]
    status, body = _raw_get(server.url, path)
    assert status in (400, 404), (path, status)
    assert secret not in body and b"root:" not in body and b"import " not in body


def test_a_symlink_in_the_previews_folder_cannot_lead_out(server, library, tmp_path):
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"\x89PNG\r\n\x1a\nSECRET")
    name = "ab" + "c" * 62
    link = library.home / "previews" / "ab" / f"{name}.png"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside)
    try:
        status, body = _raw_get(server.url, f"/previews/ab/{name}.png")
        assert status == 404 and b"SECRET" not in body
    finally:
        link.unlink()


def test_other_host_headers_are_refused(server):
    # a DNS-rebinding page reaches 127.0.0.1 under its own name: the Host header gives it away
    status, _ = _raw_get(server.url, "/api/adapters", host="evil.example:80")
    assert status == 400
    status, _ = _raw_get(server.url, "/api/adapters", host=f"localhost:{urlsplit(server.url).port}")
    assert status == 200


def test_card_text_is_escaped_not_run(server):
    status, _, body = server.get(f"/adapters/{PREVIEWED}")
    html = body.decode()
    assert status == 200
    assert INJECTION not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    _, _, body = server.get("/?q=mystyle")
    assert INJECTION not in body.decode()


def test_entry_page_shows_previews_recipe_and_sources(server, library):
    _, _, body = server.get(f"/adapters/{PREVIEWED}")
    html = body.decode()
    assert f'src="/{library.preview_path}"' in html
    assert "mystyle, a cat" in html and "lora generate --from" in html
    assert "&lt;lora:style-sd1-0:1&gt;" in html and "a0.safetensors" in html


def test_entry_page_gives_verdicts_against_the_saved_bases(server):
    html = server.get(f"/adapters/{PREVIEWED}")[2].decode()
    assert 'my-sd15</td><td class="verdict compatible">compatible' in html
    html = server.get("/adapters/style-sdxl-1")[2].decode()
    assert 'my-sd15</td><td class="verdict incompatible">incompatible' in html


def test_read_only_server_refuses_edits(server):
    status, _, body = server.post(f"/api/adapters/{EDITED}/tags", {"add": ["x"]}, token="anything")
    assert status == 403 and _json(body)["error"]["code"] == "editing-disabled"
    _, _, body = server.get(f"/api/adapters/{EDITED}")
    assert "x" not in _json(body)["tags"]


def test_edits_need_the_printed_token(edit_server):
    for token in (None, "", "wrong", edit_server.token + "x"):
        status, _, body = edit_server.post(f"/api/adapters/{EDITED}/tags", {"add": ["nope"]}, token=token)
        assert status == 403 and _json(body)["error"]["code"] == "bad-edit-token"
    _, _, body = edit_server.get(f"/api/adapters/{EDITED}")
    assert "nope" not in _json(body)["tags"]
    status, _, body = edit_server.post(f"/api/adapters/{EDITED}/tags", {"add": ["kept"]}, token=edit_server.token)
    assert status == 200 and "kept" in _json(body)["tags"]
    status, _, body = edit_server.post(f"/api/adapters/{EDITED}/triggers", {"trigger_words": ["zap"]},
                                       token=edit_server.token)
    assert status == 200 and _json(body)["trigger_words"] == ["zap"]
    status, _, body = edit_server.post(f"/api/adapters/{EDITED}/tags", {"add": "notalist"}, token=edit_server.token)
    assert status == 400 and _json(body)["error"]["code"] == "usage"
    edit_server.post(f"/api/adapters/{EDITED}/tags", {"remove": ["kept"]}, token=edit_server.token)
    edit_server.post(f"/api/adapters/{EDITED}/triggers", {"trigger_words": []}, token=edit_server.token)



def test_preferred_weight_is_edited_with_the_token_and_reaches_the_copy_button(edit_server):
    url = f"/api/adapters/{EDITED}/weight"
    for token in (None, "wrong"):
        status, _, body = edit_server.post(url, {"preferred_weight": 0.6}, token=token)
        assert status == 403 and _json(body)["error"]["code"] == "bad-edit-token"
    assert _json(edit_server.get(f"/api/adapters/{EDITED}")[2])["preferred_weight"] is None
    for bad in ("0.6", True, 11, float("nan"), [1]):
        status, _, body = edit_server.post(url, {"preferred_weight": bad}, token=edit_server.token)
        assert status == 400 and _json(body)["error"]["code"] == "invalid-weight", bad
    status, _, body = edit_server.post(url, {}, token=edit_server.token)
    assert status == 400 and _json(body)["error"]["code"] == "usage"
    status, _, body = edit_server.post(url, {"preferred_weight": 0.6}, token=edit_server.token)
    assert status == 200 and _json(body)["preferred_weight"] == 0.6
    listed = _json(edit_server.get(f"/api/adapters?q={EDITED}")[2])
    assert {r["name"]: r["preferred_weight"] for r in listed}[EDITED] == 0.6
    html = edit_server.get(f"/adapters/{EDITED}")[2].decode()
    assert f'data-copy="&lt;lora:{EDITED}:0.6&gt;"' in html and 'id="edit-weight"' in html
    status, _, body = edit_server.post(url, {"preferred_weight": None}, token=edit_server.token)
    assert status == 200 and _json(body)["preferred_weight"] is None
    assert f"&lt;lora:{EDITED}:1&gt;" in edit_server.get(f"/adapters/{EDITED}")[2].decode()


def test_read_only_server_refuses_a_weight_edit(server):
    status, _, body = server.post(f"/api/adapters/{EDITED}/weight", {"preferred_weight": 0.5}, token="anything")
    assert status == 403 and _json(body)["error"]["code"] == "editing-disabled"
    assert _json(server.get(f"/api/adapters/{EDITED}")[2])["preferred_weight"] is None

def test_another_host_needs_the_flag_and_warns(library):
    served = Served(library.home, "--host", "0.0.0.0")
    try:
        assert urlsplit(served.url).hostname == "0.0.0.0"
        assert served.get("/api/adapters")[0] == 200
    finally:
        err = served.stop()
    assert "warning" in err and "anyone who can reach this machine" in err


def test_json_start_line_and_busy_port(library, server, run_cli_subprocess):
    port = str(urlsplit(server.url).port)
    result = run_cli_subprocess("serve", "--port", port, "--json", env={"LORAHUB_HOME": str(library.home)},
                                timeout=120)
    assert result.returncode == 2 and result.json()["error"]["code"] == "usage"


def test_lora_list_never_imports_the_web_stack(library):
    probe = ("import sys\nfrom lorahub_cli.__main__ import main\n"
             "assert main(['list', '--json']) == 0\n"
             "web = ('starlette', 'uvicorn', 'jinja2', 'lorahub_cli.serve')\n"
             "print('LOADED', sorted(m for m in sys.modules if m.split('.')[0] in web or m.startswith(web[3])))\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "LORAHUB_HOME": str(library.home)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rsplit("LOADED", 1)[1].strip() == "[]"
