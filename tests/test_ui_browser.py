"""The app in a real browser (Debian's Chromium through Playwright), on a real Engine.

Each state the page reaches is saved as a screenshot in artifacts/ui/, and the time from
pressing Run to the first cue row and to the finished preview goes to artifacts/ui/timings.json.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import pysrt
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from pysrt import SubRipFile

from engine.formats import read_json, read_vtt
from tests.support.browser import chromium, new_context, open_accordion, serve_app
from tests.support.openai_server import serve_openai
from tests.support.timing import HANG_GUARD_S
from ui.handlers import HEARTBEAT_S

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "ui"
MODEL = "bundled:tiny.en"
API_KEY = "sk-browser-test-key"
KEY_STORAGE = "subtide-llm-key"  # where the page keeps the key (encrypted)
BACKEND_STORAGE = "subtide-backend"  # and the backend: choice, URL, key
KEY_BOX = "#llm-key input"
REMOTE = "Remote (RunPod or a Subtide server)"
BACKEND_URL = "http://127.0.0.1:9/a-backend-never-called"
BACKEND_URL_BOX = "#backend-url input, #backend-url textarea"
BACKEND_KEY = "backend-test-key"
BACKEND_KEY_BOX = "#backend-key input"
# Saving or restoring the remembered settings takes well under 2 s on an idle machine; this
# only catches a hang.
SETTINGS_GUARD_MS = HANG_GUARD_S * 1000
# Long enough for a translation to be running when Cancel is pressed.
SLOW_LLM_S = 3.0
FIRST_TEXT_CELL = '#cues [data-testid="cell-0-4"]'
DONE = "#progress [data-state=done]"
PLAYER = "document.querySelector('#preview video')"
RUN_DISABLED = "() => document.querySelector('#run').disabled"
# The bottom of the video's box and the top of the player's controls, in page pixels.
PLAYER_BOXES = """() => [document.querySelector('#preview video').getBoundingClientRect().bottom,
    document.querySelector('#preview .controls').getBoundingClientRect().top]"""
# Shows the preview's text track and says how many cues it holds, once it has loaded them.
TRACK_CUES = """() => {
    const video = document.querySelector('#preview video');
    if (!video || !video.textTracks.length) return false;
    const track = video.textTracks[0];
    track.mode = 'showing';
    return track.cues && track.cues.length ? track.cues.length : false;
}"""
TRACK_TEXT = """() => Array.from(document.querySelector('#preview video').textTracks[0].cues,
    (cue) => cue.text).join('\\n')"""


@pytest.fixture(scope="module")
def llm():
    with serve_openai(api_key=API_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def app_url(cache_root, llm):
    from engine.pipeline import Engine, EngineOptions
    from ui.app import UiDefaults, build

    # No transcript cache: every run really transcribes, so the timings and Cancel are real.
    options = EngineOptions(
        cache_dir=cache_root, whisper_model=MODEL, allow_private_urls=True, use_cache=False
    )
    engine = Engine(options)
    defaults = UiDefaults(
        whisper_model=MODEL, llm_base_url=f"{llm.url}/v1", llm_model="gpt-4o-mini"
    )
    with serve_app(build(lambda: engine, defaults=defaults)) as url:
        yield url


@pytest.fixture(scope="module")
def remote_app_url(cache_root):
    """The app with its Backend section, whose choice, URL and key the browser remembers too."""
    import cloud
    from engine.pipeline import Engine, EngineOptions
    from ui.app import UiDefaults, build
    from ui.remote import Remote

    engine = Engine(EngineOptions(cache_dir=cache_root, whisper_model=MODEL))
    remote = Remote(cloud.connect, cloud.check)
    blocks = build(lambda: engine, remote=remote, defaults=UiDefaults(whisper_model=MODEL))
    with serve_app(blocks) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with chromium() as chrome:
        yield chrome


@pytest.fixture
def page(browser, app_url):
    context = new_context(browser, accept_downloads=True)
    page = context.new_page()
    # Works offline: the page asks nothing of any host but the app's own.
    elsewhere = []
    page.on(
        "request",
        lambda request: (
            None
            if request.url.startswith((app_url, "data:", "blob:"))
            else elsewhere.append(request.url)
        ),
    )
    page.goto(app_url)
    page.wait_for_selector("#run")
    yield page
    context.close()
    assert elsewhere == []


def test_run_preview_edit_and_download(page, clips, llm):
    shot(page, "01-loaded")
    remember_key(page)
    choose_german(page)
    page.get_by_text("Speakers", exact=True).click()
    page.get_by_label("builtin").check()
    upload(page, clips.dialogue_mp4)

    started = time.monotonic()
    page.click("#run")
    page.wait_for_selector(FIRST_TEXT_CELL)
    first_cue = time.monotonic() - started
    shot(page, "02-running")
    page.wait_for_selector(DONE)
    track_cues = page.wait_for_function(TRACK_CUES).json_value()
    preview = time.monotonic() - started
    record_timings(first_cue, preview)

    show_frame(page, 1.0)
    shot(page, "03-done")
    files = downloads(page)
    names = [
        f"dialogue_en{lang}.{ext}" for ext in ("srt", "vtt", "ass", "txt") for lang in ("", ".de")
    ]
    assert sorted(files) == sorted([*names, "dialogue_en.json"])
    cues = read_json(files["dialogue_en.json"])
    assert len(cues) == track_cues >= len(clips.dialogue.sentences)
    assert {cue.speaker for cue in cues} == {"SPEAKER_1", "SPEAKER_2"}
    assert len(pysrt.from_string(files["dialogue_en.srt"])) == len(cues)
    german = pysrt.from_string(files["dialogue_en.de.srt"])
    # Speakers on: each subtitle says who speaks (labels are on by default).
    assert all(re.match(r"\[SPEAKER_\d\] \[ge\]", sub.text) for sub in german), german.text
    assert len(read_vtt(files["dialogue_en.vtt"])) == len(cues)
    assert files["dialogue_en.ass"].count("\nDialogue: ") == len(cues)
    assert "cottage" in files["dialogue_en.txt"].lower()
    assert page.locator("#timeline svg[data-speakers='2']").count() == 1

    old_track = track_src(page)
    page.get_by_label("Dual: original + German").check()
    page.wait_for_function(f"() => {track_src_js()} !== {json.dumps(old_track)}")
    page.wait_for_function(TRACK_CUES)
    dual = page.evaluate(TRACK_TEXT)
    assert cues[0].text.split("\n")[0] in dual and "[ge]" in dual
    show_frame(page, 4.0)
    shot(page, "04-dual-view")

    holiday = "Where shall we go on holiday?"
    edited = srt_after(page, lambda: edit_first_text(page, holiday), "dialogue_en.srt")
    assert re.fullmatch(r"\[SPEAKER_\d\] Where shall we go on holiday\?", edited[0].text)
    original = pysrt.from_string(files["dialogue_en.srt"])
    assert (edited[0].start, edited[0].end) == (original[0].start, original[0].end)
    shot(page, "05-edited")
    assert API_KEY not in page.content()
    # The browser keeps the key encrypted, and nothing else there holds it in plain text.
    assert API_KEY not in page.evaluate("() => JSON.stringify(localStorage)")
    assert all(
        request.headers.get("authorization") == f"Bearer {API_KEY}" for request in llm.requests
    )


def test_the_editor_is_linked_to_the_player_and_its_keys_edit_the_downloads(page, clips):
    upload(page, clips.short_mp4)
    page.click("#run")
    page.wait_for_selector(DONE)
    # A cell's menu offers only what the cue list can do: delete the row's cue.
    page.locator(FIRST_TEXT_CELL).click()
    page.locator("#cues [role=gridcell] .cell-menu-button").first.click(force=True)
    offered = page.locator(".cell-menu [role=menuitem]:visible").all_inner_texts()
    assert [item.strip() for item in offered] == ["Delete row"], offered
    page.keyboard.press("Escape")
    page.wait_for_function(TRACK_CUES)
    before = pysrt.from_string(downloads(page, only="short_en.srt")["short_en.srt"])
    second = before[1].start.ordinal / 1000

    # A click on a row plays from its cue's start, and selects the cue.
    page.locator('#cues [data-testid="cell-1-4"]').click()
    page.wait_for_function(f"() => Math.abs({PLAYER}.currentTime - {second}) < 0.01")
    page.wait_for_function("() => document.querySelector('#cue-id input').value === '2'")
    # While it plays, the row of the cue being played is marked.
    page.evaluate(f"() => {{ {PLAYER}.muted = true; {PLAYER}.play(); }}")
    page.wait_for_selector("#cues .virtual-row.subtide-playing")
    page.evaluate(f"() => {PLAYER}.pause()")
    now = page.evaluate(f"() => {PLAYER}.currentTime")
    playing = [c for c in before if c.start.ordinal / 1000 <= now < c.end.ordinal / 1000]
    marked = page.locator(
        "#cues .virtual-row.subtide-playing [data-col='4'] span.text"
    ).inner_text()
    assert [marked.strip()] == [c.text.replace("\n", " ") for c in playing]

    # "s" splits the selected cue at the player's position; "z" undoes it.
    show_frame(page, second + (before[1].end.ordinal / 1000 - second) / 2)
    page.locator("#editor-keys").click()  # out of any text box
    split = srt_after(page, lambda: page.keyboard.press("s"))
    assert len(split) == len(before) + 1
    shot(page, "10-split")
    undone = srt_after(page, lambda: page.keyboard.press("z"))
    assert [c.text for c in undone] == [c.text for c in before]

    # The waveform: a region per cue; a click plays from there; an edge dragged retimes.
    wave = page.locator("#waveform svg")
    assert int(wave.get_attribute("data-cues")) == len(before)
    wave.scroll_into_view_if_needed()
    box = wave.bounding_box()
    page.mouse.click(box["x"] + 1.5 * wave_scale(page), box["y"] + 60)
    page.wait_for_function(f"() => Math.abs({PLAYER}.currentTime - 1.5) < 0.1")
    end_edge = '#waveform [data-cue="1"] .subtide-edge[data-edge="end"]'
    dragged = srt_after(page, lambda: drag(page, end_edge, -0.4))
    moved = (dragged[0].end.ordinal - before[0].end.ordinal) / 1000
    assert moved == pytest.approx(-0.4, abs=0.05)
    assert dragged[0].start == before[0].start
    # Dragged by its middle, a cue moves whole.
    dragged = srt_after(page, lambda: drag(page, '#waveform [data-cue="2"] .subtide-span', -0.3))
    for time_of in (lambda cue: cue.start, lambda cue: cue.end):
        moved = (time_of(dragged[1]).ordinal - time_of(before[1]).ordinal) / 1000
        assert moved == pytest.approx(-0.3, abs=0.05)
    shot(page, "12-waveform")

    # A cleared text deletes its cue once the page's question is answered yes.
    questions = []
    page.on("dialog", lambda dialog: (questions.append(dialog.message), dialog.accept()))
    cleared = srt_after(page, lambda: edit_first_text(page, ""))
    assert [c.text for c in cleared] == [c.text for c in dragged[1:]]
    assert len(questions) == 1, questions  # asked once, though the table reports it twice

    # "m" merges the selected cue with the next; "Shift all" moves every cue.
    page.locator('#cues [data-testid="cell-0-4"]').click()
    page.wait_for_function("() => document.querySelector('#cue-id input').value !== ''")
    page.locator("#editor-keys").click()
    merged = srt_after(page, lambda: page.keyboard.press("m"))
    assert len(merged) == len(cleared) - 1
    assert merged[0].end == cleared[1].end
    page.fill("#shift-ms input", "-250")
    shifted = srt_after(page, lambda: page.click("#edit-shift-all"))
    moved = [s.start.ordinal - m.start.ordinal for s, m in zip(shifted, merged, strict=True)]
    assert moved == [-250] * len(merged)

    # One click: the video with its subtitles as they now are joins the downloads.
    page.click("#make-video")
    page.wait_for_selector("#video-status [data-state=done]")
    mkv = page.locator('#downloads a[download="short_en.subtitled.mkv"]')
    assert mkv.count() == 1


def test_the_editor_at_a_phone_width_keeps_its_headers_whole(browser, app_url, clips):
    context = new_context(browser)
    page = context.new_page()
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(app_url)
    page.wait_for_selector("#run")
    upload(page, clips.short_mp4)
    page.click("#run")
    page.wait_for_selector(DONE)
    heights = page.evaluate(
        "() => Array.from(document.querySelectorAll('#cues [role=columnheader]'),"
        " (th) => th.offsetHeight)"
    )
    line = page.evaluate(
        "() => parseFloat(getComputedStyle("
        "document.querySelector('#cues [role=columnheader]')).lineHeight) || 20"
    )
    times = page.evaluate(
        "() => Array.from(document.querySelectorAll("
        "'#cues [role=gridcell][data-col=\"1\"] span.text'), (cell) => cell.offsetHeight)"
    )
    controls = {}
    page.locator("#preview").scroll_into_view_if_needed()
    for width in (390, 1366):
        page.set_viewport_size({"width": width, "height": 844})
        controls[width] = page.evaluate(PLAYER_BOXES)
        if width == 390:
            shot(page, "11-phone")
    shot(page, "13-wide")
    context.close()
    # A header wrapped letter by letter is several lines tall; a whole one is one line.
    assert heights and max(heights) < 3 * line, heights
    assert times and max(times) < 1.5 * line, times  # "0:00.514", not "0:00.5 / 14"
    # The player draws the subtitles at the bottom of the video's box: the controls are under it.
    for width, (video_bottom, controls_top) in controls.items():
        assert controls_top >= video_bottom, (width, video_bottom, controls_top)


def test_a_bad_url_shows_the_error_and_the_app_stays_usable(page, clips):
    page.fill("#url input, #url textarea", "ftp://x/y.mp4")
    page.click("#run")
    error = page.wait_for_selector("#error [role=alert]")
    assert "Only http and https links" in error.inner_text()
    shot(page, "06-error")

    page.fill("#url input, #url textarea", "")
    upload(page, clips.short_mp4)
    page.click("#run")
    page.wait_for_selector(DONE)
    assert not page.locator("#error [role=alert]").is_visible()


def test_cancel_stops_the_job_and_a_next_run_works(page, clips, llm):
    remember_key(page)
    choose_german(page)
    upload(page, clips.dialogue_mp4)
    llm.latency = SLOW_LLM_S
    try:
        page.click("#run")
        page.wait_for_selector(FIRST_TEXT_CELL)
        page.wait_for_selector("#progress [data-state=running]")
        assert page.evaluate(RUN_DISABLED), "a second Run would queue a second job"
        shot(page, "07-before-cancel")
        page.click("#cancel")
        page.wait_for_selector("#progress [data-state=cancelled]")
        page.wait_for_function(f"() => !({RUN_DISABLED})()")
        rows = page.locator("#cues [role=row]").count()
        time.sleep(2 * HEARTBEAT_S)  # a job still followed would have moved the page by now
        assert page.locator("#progress [data-state=cancelled]").is_visible()
        assert page.locator("#cues [role=row]").count() == rows
        shot(page, "08-cancelled")
        # What was done is kept: the cues so far are downloadable, German where translated.
        kept = downloads(page)
        assert {"dialogue_en.srt", "dialogue_en.de.srt"} <= kept.keys()
        first = pysrt.from_string(kept["dialogue_en.srt"])[0].text.replace("\n", " ")
        assert first == page.locator(FIRST_TEXT_CELL).inner_text().strip()
    finally:
        llm.latency = 0.0

    page.click("#run")
    page.wait_for_selector(DONE)
    page.wait_for_function(TRACK_CUES)
    assert page.locator("#cues [data-testid='cell-0-5']").inner_text().startswith("[ge]")
    shot(page, "09-next-run")


def test_remembered_settings_come_back_after_every_reload(browser, remote_app_url):
    context = new_context(browser)
    page = context.new_page()
    try:
        page.goto(remote_app_url)
        page.wait_for_selector("#run")
        type_and_leave(page, "Translation provider", KEY_BOX, API_KEY, KEY_STORAGE)
        open_accordion(page, "Backend", "#backend-mode")
        before = stored(page, BACKEND_STORAGE)
        page.get_by_label(REMOTE).check()  # a choice is saved when picked
        wait_for_save(page, BACKEND_STORAGE, before)
        page.locator(BACKEND_URL_BOX).first.wait_for()  # shown for the remote choice
        type_and_leave(page, "Backend", BACKEND_URL_BOX, BACKEND_URL, BACKEND_STORAGE)
        type_and_leave(page, "Backend", BACKEND_KEY_BOX, BACKEND_KEY, BACKEND_STORAGE)

        # Reloads in a row; every other page is left as soon as it shows, before it may have
        # finished restoring. No page may lose a value, nor save a blank set over the stored one.
        for reload in range(6):
            page.reload()
            page.wait_for_selector("#run")
            if reload % 2:
                open_accordion(page, "Translation provider", KEY_BOX)
                wait_for_value(page, KEY_BOX, API_KEY)
                open_accordion(page, "Backend", "#backend-mode")
                wait_for_value(page, BACKEND_URL_BOX, BACKEND_URL)  # shown once Remote is back
                wait_for_value(page, BACKEND_KEY_BOX, BACKEND_KEY)
                assert page.get_by_label(REMOTE).is_checked()
        everything = page.evaluate("() => JSON.stringify(localStorage)")
        assert API_KEY not in everything and BACKEND_KEY not in everything  # encrypted at rest
    finally:
        context.close()


# --- steps --------------------------------------------------------------------------------------


def remember_key(page) -> None:
    """Types the API key as a user would, then checks that a reload brings it back."""
    type_and_leave(page, "Translation provider", KEY_BOX, API_KEY, KEY_STORAGE)
    page.reload()
    page.wait_for_selector("#run")
    open_accordion(page, "Translation provider", KEY_BOX)
    wait_for_value(page, KEY_BOX, API_KEY)
    assert page.locator(KEY_BOX).get_attribute("type") == "password"


def type_and_leave(page, accordion: str, selector: str, text: str, storage_key: str) -> None:
    """Types `text` into a remembered box as a user would and leaves the box, which saves the
    set it belongs to; returns once the page has written that set to `storage_key`."""
    open_accordion(page, accordion, selector)
    box = page.locator(selector).first
    box.press_sequentially(text)
    # Nothing may cut what was typed: the cut value is what leaving the box would save.
    assert box.input_value() == text
    before = stored(page, storage_key)
    box.press("Tab")  # saved when the box is left
    wait_for_save(page, storage_key, before)


def stored(page, storage_key: str) -> str | None:
    return page.evaluate("(key) => localStorage.getItem(key)", storage_key)


def wait_for_save(page, storage_key: str, before: str | None) -> None:
    # Each save encrypts afresh (a new salt), so a changed item is a new save.
    page.wait_for_function(
        "([key, before]) => localStorage.getItem(key) !== before",
        arg=[storage_key, before],
        timeout=SETTINGS_GUARD_MS,
    )


def wait_for_value(page, selector: str, value: str) -> None:
    """Waits until the box shows `value`, as the page restores it from the browser's storage."""
    try:
        page.wait_for_function(
            "([selector, value]) => document.querySelector(selector)?.value === value",
            arg=[selector, value],
            timeout=SETTINGS_GUARD_MS,
        )
    except PlaywrightTimeout:
        shown = page.evaluate("(selector) => document.querySelector(selector)?.value", selector)
        raise AssertionError(f"{selector} shows {shown!r}, not {value!r}") from None


def choose_german(page) -> None:
    # The language list is searchable by name.
    page.locator("#targets input").fill("germ")
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")
    assert "German (de)" in page.locator("#targets").inner_text()


def upload(page, path: Path) -> None:
    """Drops the file as a user would, and again if it did not take: Gradio may re-render the
    upload box just after another event (the link box cleared), and a file given to the old
    input is lost, as a user's drop would be. Each wait is a hang guard (idle: under 1 s)."""
    empty = page.locator("#upload input[type=file]")
    taken = page.locator(f"#upload :text('{path.name}')")
    for attempt in range(3):
        # A drop that took after the wait below gave up leaves no input to drop on again.
        empty.or_(taken).first.wait_for(state="attached")
        if taken.count():
            return
        empty.set_input_files(str(path))
        try:
            taken.first.wait_for(timeout=20_000)
            return
        except PlaywrightTimeout:
            if attempt == 2:
                raise


def edit_first_text(page, text: str) -> None:
    page.locator(FIRST_TEXT_CELL).dblclick()
    page.keyboard.press("Control+A")
    page.keyboard.press("Backspace")
    page.keyboard.type(text)
    page.keyboard.press("Enter")


def downloads(page, only: str | None = None) -> dict[str, str]:
    """Each file of the download list, fetched by clicking its link, by name."""
    files = {}
    for link in page.locator("#downloads a[download]").all():
        name = link.get_attribute("download")
        if only is not None and name != only:
            continue
        with page.expect_download() as download:
            link.click()
        files[name] = Path(download.value.path()).read_text(encoding="utf-8")
    return files


def srt_after(page, action: Callable[[], object], name: str = "short_en.srt") -> SubRipFile:
    """The SRT download `name` once `action` has changed it (each change is a new file)."""
    before = download_href(page, name)
    action()
    page.wait_for_function(f"() => {download_href_js(name)} !== {json.dumps(before)}")
    return pysrt.from_string(downloads(page, only=name)[name])


def wave_scale(page) -> float:
    """The waveform's pixels per second."""
    return float(page.locator("#waveform .subtide-wave").get_attribute("data-px-per-s"))


def drag(page, part: str, seconds: float) -> None:
    """Drags the waveform's `part` (a selector) sideways by `seconds`, as a mouse does."""
    page.locator("#waveform svg").scroll_into_view_if_needed()  # a download scrolls the page
    box = page.locator(part).bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + 40
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + seconds * wave_scale(page), y, steps=5)
    page.mouse.up()


def download_href_js(name: str) -> str:
    return f"document.querySelector('#downloads a[download={json.dumps(name)}]')?.href"


def download_href(page, name: str) -> str:
    return page.evaluate(f"() => {download_href_js(name)}")


def track_src_js() -> str:
    return "document.querySelector('#preview track')?.src"


def track_src(page) -> str:
    return page.evaluate(f"() => {track_src_js()}")


def show_frame(page, seconds: float) -> None:
    """Seeks the paused preview so the screenshot shows a subtitle over the video."""
    page.evaluate(
        "(at) => new Promise((done) => { const video = document.querySelector('#preview video');"
        " video.addEventListener('seeked', () => setTimeout(done, 300), {once: true});"
        " video.currentTime = at; })",
        seconds,
    )


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def record_timings(first_cue: float, preview: float) -> None:
    timings = {"clip": "dialogue_en.mp4", "first_cue_row_s": first_cue, "preview_ready_s": preview}
    timings = {
        key: round(value, 2) if isinstance(value, float) else value
        for key, value in timings.items()
    }
    print(f"\nUI timings: {timings}")
    (ARTIFACTS / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
