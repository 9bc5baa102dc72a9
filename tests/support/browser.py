"""A Gradio app served on 127.0.0.1 for a test, and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from tests.support.timing import JOB_HANG_GUARD_S

if TYPE_CHECKING:
    import gradio as gr
    from playwright.sync_api import Browser, BrowserContext, Page

CHROMIUM = "/usr/bin/chromium"
# Offline and quiet: no GPU, no QUIC, none of Chromium's own calls home.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def serve_app(blocks: gr.Blocks) -> Iterator[str]:
    """Launches `blocks` on a free port of 127.0.0.1 and yields its URL; stops it after."""
    blocks.launch(
        prevent_thread_lock=True,
        server_name="127.0.0.1",
        server_port=_free_port(),
        quiet=True,
        show_error=True,
    )
    try:
        yield blocks.local_url
    finally:
        blocks.close()


@contextmanager
def chromium() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def new_context(browser: Browser, **options: object) -> BrowserContext:
    """A 1400×1000 context whose waits are hang guards: Playwright's 30 s default is less
    than a whole job takes on a busy CI machine, so it would fail a test that is only slow."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, **options)
    context.set_default_timeout(JOB_HANG_GUARD_S * 1000)
    return context


def open_accordion(page: Page, label: str, inside: str) -> None:
    """Opens the accordion `label` (unless `inside`, a selector of a box it holds, shows already)
    and returns once Gradio has finished mounting what it holds, so a box there keeps what is
    typed into it.

    Gradio renders a closed accordion's content only when it opens, and pushes the values it
    keeps into the new boxes an animation frame after they mount (up to ~0.3 s after they show
    on a busy machine): what was typed in between is erased. A person is never that quick; a
    test types within milliseconds. Gradio asks for that frame before the box shows, so once
    two more frames have been painted after it shows, the push is done."""
    box = page.locator(inside).first
    if not box.is_visible():
        page.get_by_text(label, exact=True).click()
        box.wait_for()
    page.evaluate(
        "() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))"
    )


def _free_port() -> int:
    # Gradio wants a port number up front (0 is not accepted), so ask the OS for a free one.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
