"""`lora serve` tests: one small library for the session (three real adapters, a PNG preview with a recipe,
trigger words carrying HTML), real `lora serve --port 0` processes, and headless Chromium where there is one.

The servers are real subprocesses (the URL is read from their first stdout line, as a script would); the
browser is the system's Chromium driven by Playwright (its own browser download is not used). Browser tests
skip with the reason when Playwright or Chromium is missing.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

pytest.importorskip("starlette", reason="the serve extra is not installed (pip install -e '.[serve]')")

INJECTION = "<script>alert(1)</script>"
PREVIEWED = "style-sd1-0"      # has the preview and the HTML-bearing trigger word
EDITED = "style-sd1-2"         # the only entry the edit tests change
CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


@dataclass
class Library:
    home: Path
    preview_path: str          # "previews/ab/<sha256>.png" under home


@pytest.fixture(scope="session")
def library(tmp_path_factory) -> Library:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from lorahub_cli.ingest import ingest
    from lorahub_cli.previews import save_preview
    from registry.api import Registry
    from tests.fixtures.adapters import write_adapter

    root = tmp_path_factory.mktemp("serve")
    home, src = root / "home", root / "src"
    src.mkdir()
    with Registry(home=home) as reg:
        for i, (family, fmt, tag) in enumerate([("sd1", "kohya", "anime"), ("sdxl", "kohya", "photo"),
                                                ("sd1", "diffusers", "photo")]):
            path = write_adapter(src / f"a{i}.safetensors", family, fmt)
            ingest(path, reg, name=f"style-{family}-{i}", tags=[tag], with_entry=False)
        reg.set(PREVIEWED, trigger_words=["mystyle", INJECTION])
        image = Image.new("RGB", (64, 48), (200, 30, 30))
        info = PngInfo()
        info.add_itxt("lorahub", json.dumps({"prompt": "mystyle, a cat", "seed": 7}))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", pnginfo=info)
        entry = save_preview(reg, PREVIEWED, buffer.getvalue(), source="lora preview")
        from registry.records import AdapterRecord

        reg.apply_remote("style-sdxl-1", AdapterRecord(sha256=None, size=0, container="", format="", network="",
                                                       family="", label="Pony", label_source="api:civitai"))
    from lorahub_cli.bases import add_base

    add_base("sd15", name="my-sd15", home=home)   # the entry pages judge against it (bundled configs: offline)
    return Library(home=home, preview_path=entry.previews[0]["path"])


class Served:
    """A running `lora serve`: its URL (the first stdout line), edit token, and the process."""

    def __init__(self, home: Path, *args: str) -> None:
        env = {**os.environ, "LORAHUB_HOME": str(home), "LORAHUB_NO_PROGRESS": "1", "NO_COLOR": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "lorahub_cli", "serve", "--port", "0", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                     stdin=subprocess.DEVNULL)
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            self.stop()
            raise AssertionError(f"no URL on stdout: {self.url!r} {self.proc.stderr.read()}")
        self.token: Optional[str] = None
        if "--allow-edit" in args:
            self.token = self.proc.stdout.readline().split("edit token:", 1)[1].strip()

    def get(self, path: str, headers: Optional[dict] = None) -> tuple[int, dict, bytes]:
        return request(self.url.rstrip("/") + path, headers=headers)

    def post(self, path: str, body: object, token: Optional[str] = None) -> tuple[int, dict, bytes]:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["X-Lora-Token"] = token
        return request(self.url.rstrip("/") + path, data=json.dumps(body).encode(), headers=headers)

    def stop(self) -> str:
        """Stop the server (SIGTERM, as Ctrl-C would) and return what it wrote on stderr."""
        self.proc.terminate()
        try:
            _out, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _out, err = self.proc.communicate()
        return err


def request(url: str, *, data: Optional[bytes] = None, headers: Optional[dict] = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


@pytest.fixture(scope="session")
def server(library):
    served = Served(library.home)
    yield served
    served.stop()


@pytest.fixture(scope="session")
def edit_server(library):
    served = Served(library.home, "--allow-edit")
    yield served
    served.stop()


def chromium_path() -> Optional[str]:
    explicit = os.environ.get("LORAHUB_CHROMIUM")
    if explicit:
        return explicit
    return next((p for p in CHROMIUM_PATHS if os.path.exists(p)), None) or shutil.which("chromium")


@pytest.fixture(scope="session")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (the test extra)")
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium here: `apt-get install chromium` (or set LORAHUB_CHROMIUM to a Chromium binary)")
    with sync_api.sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=path, headless=True, args=["--no-sandbox"])
        except Exception as exc:  # a broken or foreign browser binary: say why, do not fail the suite
            pytest.skip(f"Chromium at {path} could not be started: {str(exc).splitlines()[0]}")
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    yield page
    context.close()
