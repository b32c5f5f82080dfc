"""The web demo in a real headless Chromium: upload, streamed answer, self-questioning chips, error messages."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from serve_common import EXAMPLE, FAST_FLAGS, REPO, reference_answers, running_server, write_tiny_checkpoint

from llava.inference.engine import GenerationSettings, InferenceEngine
from llava.mm_utils import load_image

CHROMIUM = os.environ.get("LLAVA_CHROMIUM", "/usr/bin/chromium")
# Headless flags that work on the project's machines.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path(os.environ.get("LLAVA_SCREENSHOT_DIR", REPO / "outputs" / "screenshots"))
MAX_NEW_TOKENS = 24
QUESTION = "What is in the image?"
# The server under test, with each streamed piece delayed so that the browser can watch the answer grow.
SLOW_LAUNCHER = textwrap.dedent("""
    import sys, time
    from llava.inference import engine
    plain = engine.InferenceEngine.stream
    def slow(self, *args, **kwargs):
        for piece in plain(self, *args, **kwargs):
            time.sleep(0.08)
            yield piece
    engine.InferenceEngine.stream = slow
    from llava.serve.gradio_web_server import main
    sys.exit(main(sys.argv[1:]))
""")
# Every text the last answer in the chat has shown, recorded in the page as it changes.
WATCH_ANSWER = """() => {
    window.__answerLengths = [];
    const chat = document.querySelector('#chatbot');
    const record = () => {
        const bots = chat.querySelectorAll('[data-testid="bot"]');
        if (bots.length) window.__answerLengths.push(bots[bots.length - 1].innerText.trim().length);
    };
    new MutationObserver(record).observe(chat, {subtree: true, childList: true, characterData: true});
}"""


def _chromium_or_fail() -> None:
    if os.environ.get("LLAVA_SKIP_BROWSER") == "1":
        pytest.skip("LLAVA_SKIP_BROWSER=1: browser test skipped on request")
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        pytest.fail(f"Chromium not found at {CHROMIUM}: install it (`apt-get install -y chromium`; CI must), point "
                    "LLAVA_CHROMIUM at a Chromium binary, or set LLAVA_SKIP_BROWSER=1 to skip this test locally")


def settled_text(locator, quiet: float = 1.5, timeout: float = 90.0) -> str:
    """The locator's text once it has stopped changing for `quiet` seconds (the stream is over)."""
    deadline = time.monotonic() + timeout
    text, since = locator.inner_text(), time.monotonic()
    while time.monotonic() - since < quiet:
        assert time.monotonic() < deadline, f"still changing after {timeout:.0f} s: {text!r}"
        time.sleep(0.2)
        now = locator.inner_text()
        if now != text:
            text, since = now, time.monotonic()
    return text


def words(text: str) -> str:
    """Text without markdown / whitespace differences: word characters only."""
    return re.sub(r"\W+", "", text)


@pytest.fixture(scope="module")
def checkpoint(shipped_foundation, tmp_path_factory) -> Path:
    _chromium_or_fail()
    return write_tiny_checkpoint(tmp_path_factory.mktemp("serve_browser") / "ckpt", shipped_foundation)


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("browser_server")
    (root / "launch.py").write_text(SLOW_LAUNCHER)
    args = [str(root / "launch.py"), "--model-path", str(checkpoint), *FAST_FLAGS,
            "--max-new-tokens", str(MAX_NEW_TOKENS), "--concurrency", "2"]  # a longer answer to watch
    with running_server(args, root / "server.log") as url:
        yield url


@pytest.fixture
def page(server):
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True,
            viewport={"width": 1280, "height": 1000},
        )
        try:
            page = context.new_page()
            page.set_default_timeout(90_000)
            page.goto(server)
            page.wait_for_selector("#upload")
            yield page
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


def test_web_demo_in_chromium(page, checkpoint, tmp_path):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shots: list[Path] = []

    def shot(name: str) -> None:
        path = SCREENSHOTS / f"{len(shots) + 1:02d}_{name}.png"
        page.screenshot(path=str(path), full_page=True)
        shots.append(path)
        print(f"screenshot: {path}")

    def status_contains(text: str) -> None:
        page.wait_for_function("t => document.querySelector('#status').innerText.includes(t)", arg=text)

    bots = page.locator('#chatbot [data-testid="bot"]')
    users = page.locator('#chatbot [data-testid="user"]')
    try:
        # An image, then a question whose answer streams into the chat.
        page.locator("#upload input[type=file]").set_input_files(str(EXAMPLE))
        status_contains("shapes_2.png (48x48) is in use")
        page.wait_for_selector("#preview img")
        shot("image_uploaded")

        page.evaluate(WATCH_ANSWER)
        page.fill("#question textarea", QUESTION)
        page.click("#send")
        page.wait_for_function("() => new Set(window.__answerLengths.filter(n => n > 0)).size >= 3")
        shot("answer_streaming")
        page.wait_for_function("() => document.querySelector('#question textarea').value === ''")
        engine = InferenceEngine.from_pretrained(checkpoint, device="cpu")
        expected = reference_answers(engine, load_image(EXAMPLE), [QUESTION],
                                     GenerationSettings(max_new_tokens=MAX_NEW_TOKENS))[0]
        answer = settled_text(bots.last)
        lengths = page.evaluate("() => window.__answerLengths")
        assert len({n for n in lengths if n > 0}) >= 3, f"the answer did not stream (lengths seen: {lengths})"
        assert words(answer) == words(expected)
        shot("answer_done")

        # The model questions the image; clicking a chip sends that question.
        page.click("#ask-questions")
        page.wait_for_selector("#sq-chip-0", state="visible")
        status_contains("click a question")
        chip_text = page.locator("#sq-chip-0").inner_text().strip()
        assert chip_text
        shot("self_questions")
        page.click("#sq-chip-0")
        page.wait_for_function("() => document.querySelectorAll('#chatbot [data-testid=\"bot\"]').length >= 2")
        assert words(settled_text(bots.last))
        assert users.count() == 2 and words(users.last.inner_text()) == words(chip_text)
        shot("chip_answered")

        # An empty prompt and a non-image upload are messages in the page, not tracebacks or "Error" toasts.
        page.fill("#question textarea", "")
        page.click("#send")
        status_contains("Please type a question first.")
        not_image = tmp_path / "notes.txt"
        not_image.write_text("just text")
        page.click('#upload button[aria-label="Clear"]')  # the file box takes a new file once emptied, as for a person
        page.locator("#upload input[type=file]").set_input_files(str(not_image))
        status_contains("notes.txt is not an image")
        assert page.locator(".toast-body").count() == 0
        assert "Traceback" not in page.content()
        shot("non_image_message")
    except BaseException:
        shot("failure")
        raise
    finally:
        print("screenshots:", *map(str, shots), sep="\n  ")
