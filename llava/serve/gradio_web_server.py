"""Gradio web demo (chat, self-questioning chips, `/answer` and `/ask_questions` API): `python -m llava.serve.gradio_web_server`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from llava.inference import flags
from llava.inference.engine import GenerationSettings, InferenceEngine
from llava.inference.self_questioning import SQSettings
from llava.mm_utils import ImageLoadError, load_image
from llava.serve.defaults import (
    DEFAULT_SQ_K,
    EXAMPLES_DIR,
    MAX_SQ_K,
    MAX_UPLOAD_BYTES,
    MAX_UPLOAD_PIXELS,
    example_images,
    image_error_message,
)
from llava.serve.session import ChatSession, Exchange

logger = logging.getLogger(__name__)

# Labels of the image process modes -> the engine's image_aspect_ratio names ("square" = resize + centre crop).
PROCESS_MODES = {"Crop": "square", "Resize": "resize", "Pad": "pad"}
EMPTY_PROMPT = "Please type a question first."
NO_IMAGE_FOR_SQ = "Upload an image first: the model asks its questions about an image."
TEXT_ONLY_NOTE = "No image uploaded: the question is answered from the text alone."
WARN = "**Error:** "  # plain text: headless and minimal systems often lack emoji fonts
NOTE = "**Note:** "
NOTES = """Upload an image (or pick an example), then chat. **Ask questions about this image** lets the model
question the image itself (SQ-LLaVA's visual self-questioning); click a suggested question to send it.
Without an image, questions are answered from the text alone. A new image starts a new conversation;
**Clear** starts one about the same image."""
CSS = """
#sq-chips button { font-weight: normal; text-align: left; }
#status p { margin: 0.25em 0; }
#preview img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
"""

ChatOutput = tuple[Any, ...]


def _message_of(err: Exception) -> str:
    return f"{type(err).__name__}: {err}"


class WebDemo:
    """The event handlers; one `ChatSession` per browser session (kept in `gr.State`), one shared engine."""

    def __init__(self, engine: InferenceEngine, settings: GenerationSettings | None = None,
                 sq: SQSettings | None = None, max_pixels: int = MAX_UPLOAD_PIXELS,
                 max_bytes: int = MAX_UPLOAD_BYTES):
        self.engine = engine
        self.settings = settings or GenerationSettings(temperature=0.2, top_p=0.7, max_new_tokens=512)
        self.sq = sq or flags.sq_from_defaults()
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes
        self.default_mode = next((k for k, v in PROCESS_MODES.items() if v == engine.image_aspect_ratio), "Crop")

    # ------------------------------------------------------------------ helpers
    def new_session(self, image: Image.Image | None = None) -> ChatSession:
        return ChatSession(self.engine, image, self.settings, sq=self.sq)

    def session_of(self, session: ChatSession | None) -> ChatSession:
        return session if session is not None else self.new_session()

    def open_image(self, path: str | os.PathLike) -> Image.Image:
        """Load an upload within the size limits; ValueError with a sentence for the user otherwise."""
        name = Path(path).name
        size = os.path.getsize(path) if os.path.isfile(path) else 0
        if size > self.max_bytes:
            raise ValueError(f"{name} is too large: {size / 2**20:.1f} MB (the limit is {self.max_bytes / 2**20:.1f} MB)")
        try:
            return load_image(path, max_pixels=self.max_pixels)
        except ImageLoadError as err:
            raise ValueError(image_error_message(err, name)) from None

    def settings_from(self, temperature: float, top_p: float, max_new_tokens: float) -> GenerationSettings:
        """The page's decoding controls (the server's --seed is kept)."""
        temperature = max(float(temperature or 0.0), 0.0)
        return self.settings.replace(temperature=temperature, top_p=float(top_p) if temperature > 0 else None,
                                     max_new_tokens=max(int(max_new_tokens or 1), 1))

    @staticmethod
    def chat_messages(exchanges: list[Exchange], pending: str | None = None, partial: str | None = None) -> list[dict]:
        """gr.Chatbot messages for finished rounds, plus the question being answered (and its answer so far)."""
        messages: list[dict] = []
        for exchange in exchanges:
            messages += [{"role": "user", "content": exchange.question},
                         {"role": "assistant", "content": exchange.answer}]
        if pending is not None:
            messages.append({"role": "user", "content": pending})
            if partial:
                messages.append({"role": "assistant", "content": partial})
        return messages

    @staticmethod
    def chip_updates(questions: list[str]) -> list[dict]:
        return [gr.update(value=questions[i], visible=True) if i < len(questions) else gr.update(value="", visible=False)
                for i in range(MAX_SQ_K)]

    # ------------------------------------------------------------------ events
    def on_image(self, path: str | None, session: ChatSession | None) -> ChatOutput:
        """Upload / example / clear of the file box -> (state, preview, status, chatbot, *chips)."""
        session = self.session_of(session)
        if not path:
            session.set_image(None)
            return (session, None, "", [], *self.chip_updates([]))
        try:
            image = self.open_image(path)
        except ValueError as err:
            session.set_image(None)
            return (session, None, f"{WARN}{err}. No image is in use; upload a PNG or JPEG image.", [],
                    *self.chip_updates([]))
        session.set_image(image)
        return (session, image, f"Image {Path(path).name} ({image.width}x{image.height}) is in use.", [],
                *self.chip_updates([]))

    def _chat(self, session: ChatSession, question: str, start: Callable[[], Iterator[str]],
              history: list[Exchange], note: str = "", keep_text: Any = "") -> Iterator[ChatOutput]:
        """Stream one answer -> (state, chatbot, textbox, status) updates. The round shows over `history` while it
        is generated; on a model error the page says so, the round is dropped and the textbox gets `keep_text`."""
        partial = ""
        yield session, self.chat_messages(history, question), "", note
        try:
            for piece in start():
                partial += piece
                yield session, self.chat_messages(history, question, partial.strip()), "", note
        except Exception as err:  # shown in the page, not as a traceback
            logger.exception("generation failed")
            yield (session, self.chat_messages(session.exchanges), keep_text,
                   f"{WARN}The model failed to answer: {_message_of(err)}")
            return
        yield session, self.chat_messages(session.exchanges), "", note

    def on_submit(self, text: str, session: ChatSession | None, mode: str, temperature: float, top_p: float,
                  max_new_tokens: float) -> Iterator[ChatOutput]:
        session = self.session_of(session)
        session.image_aspect_ratio = PROCESS_MODES.get(mode)
        question = (text or "").strip()
        if not question:
            yield session, self.chat_messages(session.exchanges), text, f"{NOTE}{EMPTY_PROMPT}"
            return
        settings = self.settings_from(temperature, top_p, max_new_tokens)
        note = NOTE + TEXT_ONLY_NOTE if session.image is None else ""
        yield from self._chat(session, question, lambda: session.ask(question, settings), list(session.exchanges),
                              note, keep_text=question)

    def on_suggestion(self, index: int, session: ChatSession | None, mode: str, temperature: float, top_p: float,
                      max_new_tokens: float) -> Iterator[ChatOutput]:
        session = self.session_of(session)
        if index >= len(session.suggestions):
            yield session, self.chat_messages(session.exchanges), gr.update(), f"{NOTE}That question is gone; ask again."
            return
        session.image_aspect_ratio = PROCESS_MODES.get(mode)
        settings = self.settings_from(temperature, top_p, max_new_tokens)
        question, stream = session.ask_suggestion(index, settings)
        yield from self._chat(session, question, lambda: stream, list(session.exchanges), keep_text=gr.update())

    def on_regenerate(self, session: ChatSession | None, mode: str, temperature: float, top_p: float,
                      max_new_tokens: float) -> Iterator[ChatOutput]:
        session = self.session_of(session)
        session.image_aspect_ratio = PROCESS_MODES.get(mode)
        if not session.exchanges:
            yield session, self.chat_messages([]), gr.update(), f"{NOTE}Nothing to regenerate yet."
            return
        settings = self.settings_from(temperature, top_p, max_new_tokens)
        yield from self._chat(session, session.exchanges[-1].question, lambda: session.regenerate(settings),
                              session.exchanges[:-1], keep_text=gr.update())

    def on_clear(self, session: ChatSession | None) -> ChatOutput:
        session = self.session_of(session)
        session.reset()
        return (session, [], "", "", *self.chip_updates([]))

    def on_ask_questions(self, session: ChatSession | None, mode: str, k: float) -> ChatOutput:
        """-> (state, status, *chips)."""
        session = self.session_of(session)
        session.image_aspect_ratio = PROCESS_MODES.get(mode)
        if session.image is None:
            return (session, f"{NOTE}{NO_IMAGE_FOR_SQ}", *self.chip_updates([]))
        try:
            questions = session.self_questions(int(k))
        except Exception as err:
            logger.exception("self-questioning failed")
            return (session, f"{WARN}The model failed to ask questions: {_message_of(err)}", *self.chip_updates([]))
        if not questions:
            return (session, "The model asked no questions this time; try again.", *self.chip_updates([]))
        return (session, "The model asks (click a question to send it):", *self.chip_updates(questions))

    # ------------------------------------------------------------------ API (gradio_client)
    def api_answer(self, image: str | None, question: str, temperature: float = 0.0,
                   max_new_tokens: float = 128) -> str:
        """One-turn answer about an image file (or text only without one)."""
        question = (question or "").strip()
        if not question:
            raise gr.Error(EMPTY_PROMPT)
        try:
            picture = self.open_image(image) if image else None
        except ValueError as err:
            raise gr.Error(str(err)) from None
        settings = self.settings_from(temperature, self.settings.top_p or 1.0, max_new_tokens)
        try:
            return self.new_session(picture).answer(question, settings)
        except Exception as err:
            logger.exception("generation failed")
            raise gr.Error(f"The model failed to answer: {_message_of(err)}") from None

    def api_ask_questions(self, image: str | None, k: float = DEFAULT_SQ_K) -> list[str]:
        """K questions the model asks itself about an image file."""
        if not image:
            raise gr.Error(NO_IMAGE_FOR_SQ)
        try:
            picture = self.open_image(image)
        except ValueError as err:
            raise gr.Error(str(err)) from None
        k = int(k)
        if not 1 <= k <= MAX_SQ_K:
            raise gr.Error(f"k must be between 1 and {MAX_SQ_K}")
        try:
            return self.new_session(picture).self_questions(k)
        except Exception as err:
            logger.exception("self-questioning failed")
            raise gr.Error(f"The model failed to ask questions: {_message_of(err)}") from None


def build_demo(app: WebDemo, title: str = "SQ-LLaVA") -> gr.Blocks:
    """The page: image + settings on the left, chat + self-questioning on the right, hidden API endpoints."""
    defaults = app.settings
    private: dict[str, Any] = {"api_visibility": "private"}
    with gr.Blocks(title=title) as demo:
        state = gr.State(None)
        gr.Markdown(f"# {title}\n{NOTES}")
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                upload = gr.File(label="Image (PNG, JPEG, WebP...)", type="filepath", file_count="single",
                                 elem_id="upload")
                preview = gr.Image(label="Image in use", type="pil", interactive=False, height=220, elem_id="preview")
                mode = gr.Radio(list(PROCESS_MODES), value=app.default_mode, label="Image process mode",
                                elem_id="process-mode")
                with gr.Accordion("Parameters", open=False):
                    temperature = gr.Slider(0.0, 1.5, value=defaults.temperature, step=0.05, label="Temperature",
                                            elem_id="temperature")
                    top_p = gr.Slider(0.05, 1.0, value=defaults.top_p or 0.7, step=0.05, label="Top P")
                    max_new_tokens = gr.Slider(1, 1024, value=defaults.max_new_tokens, step=1,
                                               label="Max new tokens", elem_id="max-new-tokens")
            with gr.Column(scale=2):
                chatbot = gr.Chatbot(label="Chat", height=380, elem_id="chatbot", buttons=["copy"],
                                     feedback_options=None)
                status = gr.Markdown("", elem_id="status")
                with gr.Row():
                    textbox = gr.Textbox(label="Question", show_label=False, placeholder="Ask about the image and press Enter",
                                         scale=5, elem_id="question", container=False)
                    send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
                with gr.Row():
                    regenerate = gr.Button("Regenerate", elem_id="regenerate")
                    clear = gr.Button("Clear", elem_id="clear")
                with gr.Row():
                    ask = gr.Button("Ask questions about this image", elem_id="ask-questions", scale=3)
                    k = gr.Slider(1, MAX_SQ_K, value=DEFAULT_SQ_K, step=1, label="How many", scale=1,
                                  elem_id="sq-k")
                with gr.Column(elem_id="sq-chips"):
                    chips = [gr.Button("", visible=False, size="sm", elem_id=f"sq-chip-{i}", elem_classes=["sq-chip"])
                             for i in range(MAX_SQ_K)]
        examples = [[str(p), "What is in the image?"] for p in example_images()]
        if examples:
            gr.Examples(examples, inputs=[upload, textbox], label="Examples")

        # API endpoints for gradio_client: hidden inputs, no UI.
        with gr.Column(visible=False):
            api_image = gr.File(type="filepath", label="image")
            api_question = gr.Textbox(label="question")
            api_temperature = gr.Number(value=0.0, label="temperature")
            api_max_new_tokens = gr.Number(value=128, precision=0, label="max_new_tokens")
            api_k = gr.Number(value=DEFAULT_SQ_K, precision=0, label="k")
            api_answer_out = gr.Textbox(label="answer")
            api_questions_out = gr.JSON(label="questions")
            api_answer_btn = gr.Button()
            api_ask_btn = gr.Button()

        decoding = [mode, temperature, top_p, max_new_tokens]
        chat_out = [state, chatbot, textbox, status]
        upload.change(app.on_image, [upload, state], [state, preview, status, chatbot, *chips], **private)
        send.click(app.on_submit, [textbox, state, *decoding], chat_out, **private)
        textbox.submit(app.on_submit, [textbox, state, *decoding], chat_out, **private)
        regenerate.click(app.on_regenerate, [state, *decoding], chat_out, **private)
        clear.click(app.on_clear, [state], [state, chatbot, textbox, status, *chips], **private)
        ask.click(app.on_ask_questions, [state, mode, k], [state, status, *chips], **private)
        for i, chip in enumerate(chips):
            chip.click(_bind(app.on_suggestion, i), [state, *decoding], chat_out, **private)
        api_answer_btn.click(app.api_answer, [api_image, api_question, api_temperature, api_max_new_tokens],
                             api_answer_out, api_name="answer")
        api_ask_btn.click(app.api_ask_questions, [api_image, api_k], api_questions_out, api_name="ask_questions")
    return demo


def _bind(handler: Callable[..., Iterator[ChatOutput]], index: int) -> Callable[..., Iterator[ChatOutput]]:
    # A real generator function (not functools.partial), so that gradio streams its updates.
    def suggestion(*args: Any) -> Iterator[ChatOutput]:
        yield from handler(index, *args)

    return suggestion


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llava.serve.gradio_web_server", description=__doc__)
    flags.add_model_args(parser, flags.CHAT)
    flags.add_decoding_args(parser, flags.CHAT.replace(top_p=0.7))
    flags.add_sq_args(parser, flags.DEMO_QUESTIONS)
    g = parser.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 exposes the demo to the network)")
    g.add_argument("--port", type=int, default=7860)
    g.add_argument("--concurrency", type=int, default=4, help="requests generated at the same time (gradio queue)")
    g.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    g.add_argument("--max-image-pixels", type=int, default=MAX_UPLOAD_PIXELS, help="larger uploads are refused")
    g.add_argument("--max-upload-mb", type=float, default=MAX_UPLOAD_BYTES / 2**20, help="larger files are refused")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own start-up requests, one line each
    engine = flags.load_engine_or_exit(args)
    app = WebDemo(
        engine, flags.decoding_from_args(args), flags.sq_from_args(args, GenerationSettings()),
        max_pixels=args.max_image_pixels, max_bytes=int(args.max_upload_mb * 2**20),
    )
    demo = build_demo(app)
    demo.queue(default_concurrency_limit=max(args.concurrency, 1))
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, show_error=True,
                allowed_paths=[str(EXAMPLES_DIR)], css=CSS, ssr_mode=False, footer_links=["api"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
