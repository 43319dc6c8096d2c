"""`lora serve` in headless Chromium (Playwright, the system's browser): the page loads, a filter narrows
the table, an entry page shows its previews, the copy buttons copy the right text, an injected script never
runs, and an edit without the token is refused.

With LORAHUB_SCREENSHOTS=DIR the pages are also saved there as PNGs (docs/screenshots is made this way)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.serve.conftest import EDITED, INJECTION, PREVIEWED


def _shot(page, name: str) -> None:
    folder = os.environ.get("LORAHUB_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def _loaded(page, selector: str) -> int:
    """The natural width of the image at ``selector`` once it has loaded (0: broken or missing)."""
    page.wait_for_function(f"() => document.querySelector({json.dumps(selector)})?.complete")
    return page.eval_on_selector(selector, "img => img.naturalWidth")


def test_the_page_loads_with_its_table_and_thumbnails(page, server):
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url)
    assert page.title() == "lora library"
    assert page.locator("#adapters tbody tr").count() == 3
    assert page.locator("#count").inner_text() == "3 adapters"
    assert _loaded(page, f'tr[data-name="{PREVIEWED}"] td.thumb img') == 64
    assert errors == []
    _shot(page, "serve-library")


def test_a_filter_narrows_the_table(page, server):
    page.goto(server.url)
    page.select_option("#f-family", "sdxl")
    page.click("#f-apply")
    page.wait_for_url("**family=sdxl**")
    rows = page.locator("#adapters tbody tr")
    assert rows.count() == 1 and rows.first.get_attribute("data-name") == "style-sdxl-1"
    page.fill("#f-q", "nothing-is-called-this")
    page.click("#f-apply")
    page.wait_for_url("**q=nothing-is-called-this**")
    assert page.locator("#adapters tbody tr").count() == 0
    page.goto(server.url)
    page.select_option("#f-label", "Pony")
    page.click("#f-apply")
    page.wait_for_url("**label=Pony**")
    assert [r.get_attribute("data-name") for r in page.locator("#adapters tbody tr").all()] == ["style-sdxl-1"]
    page.goto(server.url)
    page.select_option("#f-tag", "anime")
    page.click("#f-apply")
    page.wait_for_url("**tag=anime**")
    assert [r.get_attribute("data-name") for r in page.locator("#adapters tbody tr").all()] == [PREVIEWED]


def test_the_entry_page_shows_its_previews_and_their_recipe(page, server, library):
    page.goto(server.url)
    page.click(f'a[href="/adapters/{PREVIEWED}"]')
    page.wait_for_url(f"**/adapters/{PREVIEWED}")
    assert page.locator("#name").inner_text() == PREVIEWED
    assert page.locator("#previews img").count() == 1
    assert _loaded(page, "#previews img") == 64
    assert page.locator("#previews img").get_attribute("src") == "/" + library.preview_path
    page.click("#previews details.recipe summary")
    assert "mystyle, a cat" in page.locator("#previews details.recipe pre").inner_text()
    _shot(page, "serve-entry")


def test_the_copy_buttons_copy_the_lora_tag_and_the_trigger_words(page, server):
    page.goto(f"{server.url}adapters/{PREVIEWED}")
    page.bring_to_front()   # the clipboard answers a focused document only
    page.click("#copy-tag")
    page.wait_for_selector("#copy-status.ok")
    _clipboard_holds(page, f"<lora:{PREVIEWED}:1>")
    page.click("#copy-triggers")
    # A function, not a bare expression: Playwright polls a bare expression through eval(), which the
    # page's CSP (script-src 'self') refuses, depending on timing.
    page.wait_for_function("() => document.querySelector('#copy-status').textContent.includes('mystyle')")
    _clipboard_holds(page, f"mystyle, {INJECTION}")


def _clipboard_holds(page, text: str) -> None:
    """Wait until the system clipboard (read through the page) holds ``text``; a wrong text times out."""
    page.wait_for_function("async (want) => (await navigator.clipboard.readText()) === want", arg=text)
    assert page.evaluate("navigator.clipboard.readText()") == text


def test_injected_html_is_shown_as_text_and_never_runs(page, server):
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"{server.url}adapters/{PREVIEWED}")
    page.goto(f"{server.url}?q=mystyle")
    page.goto(f"{server.url}adapters/{PREVIEWED}")
    assert dialogs == []
    assert INJECTION in page.locator("#facts").inner_text()
    assert page.locator("script").count() == 1   # only /static/app.js


def test_an_edit_without_the_token_is_refused(page, edit_server):
    page.goto(f"{edit_server.url}adapters/{EDITED}")
    page.fill("#edit-add", "sneaky")
    page.click("#edit-save")
    page.wait_for_selector("#edit-status.error")
    assert "bad-edit-token" in page.locator("#edit-status").inner_text()
    page.reload()
    assert "sneaky" not in page.locator("#facts").inner_text()
    page.fill("#edit-add", "welcome")
    page.fill("#edit-token", edit_server.token)
    page.click("#edit-save")
    page.wait_for_selector("td.tag:text-is('welcome')")   # saved, and the page reloaded with it
    _shot(page, "serve-edit")
    edit_server.post(f"/api/adapters/{EDITED}/tags", {"remove": ["welcome"]}, token=edit_server.token)


def test_the_read_only_page_has_no_edit_form(page, server):
    page.goto(f"{server.url}adapters/{EDITED}")
    assert page.locator("#edit-form").count() == 0
