"""The gradio demo: its API driven by gradio_client against a live server, and its page handlers in-process."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from serve_common import (
    EXAMPLE,
    FAST_FLAGS,
    GREEDY,
    demo_sq,
    reference_answers,
    running_server,
    write_tiny_checkpoint,
)

from llava.inference import flags
from llava.inference.engine import InferenceEngine
from llava.mm_utils import load_image
from llava.serve.gradio_web_server import (
    EMPTY_PROMPT,
    MAX_SQ_K,
    NO_IMAGE_FOR_SQ,
    TEXT_ONLY_NOTE,
    WebDemo,
    build_demo,
)

QUESTIONS = ["What is in the image?", "How many objects are there?", "What colour is the star?", "Where is the square?"]
MAX_PIXELS = 100 * 100  # the server's upload limit here: the 48 px examples pass, a 200 px image does not


@pytest.fixture(scope="module")
def checkpoint(shipped_foundation, tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("serve_gradio") / "ckpt", shipped_foundation)


@pytest.fixture(scope="module")
def engine(checkpoint) -> InferenceEngine:
    return InferenceEngine.from_pretrained(checkpoint, device="cpu")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("uploads")
    (root / "notes.txt").write_text("not a picture")
    Image.new("RGB", (200, 200), (10, 200, 10)).save(root / "big.png")
    (root / "broken.png").write_bytes(EXAMPLE.read_bytes()[:100])
    return {"text": root / "notes.txt", "big": root / "big.png", "broken": root / "broken.png"}


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    log = tmp_path_factory.mktemp("server") / "server.log"
    args = ["-m", "llava.serve.gradio_web_server", "--model-path", str(checkpoint), *FAST_FLAGS,
            "--concurrency", "4", "--max-image-pixels", str(MAX_PIXELS)]
    with running_server(args, log) as url:
        yield url


@pytest.fixture(scope="module")
def client(server) -> Client:
    return Client(server, verbose=False)


# ---------------------------------------------------------------------- the API, through a live server
def test_api_lists_the_two_endpoints(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/answer", "/ask_questions"} <= set(endpoints)


def test_api_answer_equals_the_engine(client, engine):
    got = client.predict(handle_file(str(EXAMPLE)), QUESTIONS[0], 0.0, GREEDY.max_new_tokens, api_name="/answer")
    assert got == reference_answers(engine, load_image(EXAMPLE), QUESTIONS[:1])[0]


def test_api_four_requests_at_once(server, engine):
    image = load_image(EXAMPLE)
    expected = [reference_answers(engine, image, [q])[0] for q in QUESTIONS]

    def ask(question: str) -> str:
        return Client(server, verbose=False).predict(handle_file(str(EXAMPLE)), question, 0.0,
                                                     GREEDY.max_new_tokens, api_name="/answer")

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(ask, QUESTIONS)) == expected


def test_api_messages(client, files):
    for bad, message in [
        ((handle_file(str(EXAMPLE)), "   "), EMPTY_PROMPT),
        ((handle_file(str(files["text"])), "What is it?"), "notes.txt is not an image"),
        ((handle_file(str(files["big"])), "What is it?"), "big.png is too large: 200x200 exceeds 10000 pixels"),
        ((handle_file(str(files["broken"])), "What is it?"), "broken.png is a corrupt or truncated image"),
    ]:
        with pytest.raises(AppError, match=message):
            client.predict(*bad, 0.0, 4, api_name="/answer")
    with pytest.raises(AppError, match="Upload an image first"):
        client.predict(None, 2, api_name="/ask_questions")


def test_api_text_only_and_questions(client, engine):
    assert client.predict(None, QUESTIONS[1], 0.0, 8, api_name="/answer") == reference_answers(
        engine, None, QUESTIONS[1:2], GREEDY.replace(max_new_tokens=8))[0]
    questions = client.predict(handle_file(str(EXAMPLE)), 2, api_name="/ask_questions")
    assert isinstance(questions, list) and 1 <= len(questions) <= 2 and all(isinstance(q, str) for q in questions)


# ---------------------------------------------------------------------- the page's handlers, in-process
@pytest.fixture
def app(engine) -> WebDemo:
    return WebDemo(engine, GREEDY, demo_sq(), max_pixels=MAX_PIXELS)


def last(updates):
    *_, final = updates
    return final


def test_page_chat_regenerate_clear(app, engine):
    session, preview, status, chat, *chips = app.on_image(str(EXAMPLE), None)
    assert "shapes_2.png (48x48) is in use" in status and preview is session.image
    expected = reference_answers(engine, session.image, QUESTIONS[:2])
    steps = list(app.on_submit(QUESTIONS[0], session, "Crop", 0.0, 0.7, 12))
    assert steps[0][2] == "" and steps[0][1][-1] == {"role": "user", "content": QUESTIONS[0]}  # textbox cleared
    session, chat, _, status = steps[-1]
    assert chat[-1] == {"role": "assistant", "content": expected[0]} and status == ""
    session, chat, _, _ = last(app.on_submit(QUESTIONS[1], session, "Crop", 0.0, 0.7, 12))
    assert [m["content"] for m in chat[1::2]] == expected
    session, chat, _, _ = last(app.on_regenerate(session, "Crop", 0.0, 0.7, 12))
    assert [m["content"] for m in chat[1::2]] == expected  # greedy: regenerated = same
    session, chat, text, status, *chips = app.on_clear(session)
    assert chat == [] and session.exchanges == [] and session.image is not None


def test_page_messages(app, files):
    session = app.on_image(str(EXAMPLE), None)[0]
    *_, text, status = last(app.on_submit("  ", session, "Crop", 0.0, 0.7, 12))
    assert EMPTY_PROMPT in status and text == "  "
    for name, message in [("text", "notes.txt is not an image"), ("big", "big.png is too large"),
                          ("broken", "broken.png is a corrupt or truncated image")]:
        session, preview, status, *_ = app.on_image(str(files[name]), session)
        assert message in status and "No image is in use" in status and preview is None and session.image is None
    session, status, *chips = app.on_ask_questions(session, "Crop", 2)
    assert NO_IMAGE_FOR_SQ in status and not any(c["visible"] for c in chips)
    *_, status = last(app.on_submit("Hello?", session, "Crop", 0.0, 0.7, 4))  # no image: text-only, with a note
    assert TEXT_ONLY_NOTE in status and len(session.exchanges) == 1


def test_page_model_error_is_a_message(app, monkeypatch):
    session = app.on_image(str(EXAMPLE), None)[0]

    def broken_stream(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")
        yield  # pragma: no cover

    monkeypatch.setattr(InferenceEngine, "stream", broken_stream)
    session, chat, text, status = last(app.on_submit("What is it?", session, "Crop", 0.0, 0.7, 4))
    assert "The model failed to answer: RuntimeError: CUDA out of memory (simulated)" in status
    assert text == "What is it?" and chat == [] and session.exchanges == []  # the question is kept to retry


def test_page_self_questions_and_chips(app, engine):
    session = app.on_image(str(EXAMPLE), None)[0]
    session, status, *chips = app.on_ask_questions(session, "Pad", 3)
    shown = [c["value"] for c in chips if c["visible"]]
    assert len(chips) == MAX_SQ_K and 1 <= len(shown) <= 3 and shown == [s.text for s in session.suggestions]
    assert all(q.endswith("?") and "Answer the question" not in q and "USER:" not in q for q in shown)
    assert "click a question" in status
    session, chat, _, _ = last(app.on_suggestion(0, session, "Pad", 0.0, 0.7, 12))
    assert chat[0]["content"] == shown[0] and session.image_aspect_ratio == "pad"
    assert engine.image_aspect_ratio == "square"  # the shared engine is untouched by this user's "Pad"


def test_chips_show_tidy_questions_and_send_the_models_form(app, engine, monkeypatch):
    """What the model wrote -> what the chips show -> what a click sends (and the chat shows)."""
    from llava.inference import self_questioning

    raw = ["What shape is the largeVUSER: What color is the circle?",  # a turn begun inside another: dropped
           "What color is the circle? Answer the question using a single word or phrase.",
           "What color is the circle?",  # the same question once tidied: kept once
           "Is there a red square?"]
    rounds = iter([raw[:3], raw[3:]])  # the ask samples K = 3 per round until 3 distinct tidy ones or 3 rounds
    monkeypatch.setattr(self_questioning, "sample_questions", lambda *a, **kw: [next(rounds, [])])
    session = app.on_image(str(EXAMPLE), None)[0]
    session, _, *chips = app.on_ask_questions(session, "Crop", 3)
    shown = [c["value"] for c in chips if c["visible"]]
    assert shown == ["What color is the circle?", "Is there a red square?"]
    sent = []
    original = engine.stream

    def spy(request, settings):
        sent.append(request.conversation.get_prompt())
        yield from original(request, settings)

    monkeypatch.setattr(engine, "stream", spy)
    session, chat, _, _ = last(app.on_suggestion(0, session, "Crop", 0.0, 0.7, 4))
    assert chat[0]["content"] == "What color is the circle?"
    assert sent[0].endswith("What color is the circle?\nAnswer the question using a single word or phrase. ASSISTANT:")
    assert session.exchanges[0].question == "What color is the circle?"
    session, chat, _, _ = last(app.on_submit("And the square?", session, "Crop", 0.0, 0.7, 4))
    assert "What color is the circle?\nAnswer the question using a single word or phrase. ASSISTANT:" in sent[1]


def test_page_builds(app):
    demo = build_demo(app)
    names = {dep.api_name for dep in demo.fns.values() if dep.api_visibility == "public"}
    assert {"answer", "ask_questions"} <= names


def test_server_without_a_model_says_how_to_build_it(monkeypatch, tmp_path, capsys):
    from llava.serve import gradio_web_server

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(flags, "REPO_ROOT", tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        gradio_web_server.main([])
    assert exit_info.value.code == 2 and "run `bash scripts/quickstart.sh` to build it" in capsys.readouterr().err
