"""Multi-turn terminal chat about an image: `python -m llava.serve.cli --image-file F [--model-path P]`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from typing import TextIO

from llava.inference import flags
from llava.inference.engine import GenerationSettings
from llava.mm_utils import ImageLoadError, load_image
from llava.serve.defaults import DEFAULT_SQ_K, MAX_SQ_K, image_error_message
from llava.serve.session import ChatSession

USER_PROMPT = "USER: "
ASSISTANT_PROMPT = "ASSISTANT: "
HELP = f"""Commands:
  /ask [K]       the model asks K questions about the image (default {DEFAULT_SQ_K}), numbered
  /q N           send question N of the last /ask
  /image PATH    chat about another image (starts a new conversation)
  /reset         new conversation about the same image
  /help          this text
  /quit          leave (Ctrl-D too)
Anything else is sent to the model."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llava.serve.cli", description=__doc__)
    parser.add_argument("--image-file", "--image_file", dest="image_file", default=None,
                        help="image to talk about (without one the chat is text-only until /image)")
    flags.add_model_args(parser, flags.CHAT)
    flags.add_decoding_args(parser, flags.CHAT)
    flags.add_sq_args(parser, flags.DEMO_QUESTIONS)
    return parser


class ChatCLI:
    """The read-answer loop over a `ChatSession`; `read_line` returns "" at end of input."""

    def __init__(self, session: ChatSession, read_line: Callable[[], str], out: TextIO, echo: bool = False):
        self.session = session
        self.read_line = read_line
        self.out = out
        self.echo = echo  # write what was read after the prompt (input from a pipe is not shown by a terminal)

    def say(self, text: str = "", end: str = "\n") -> None:
        self.out.write(text + end)
        self.out.flush()

    def run(self) -> int:
        self.say("Type a question, or /help for commands.")
        while True:
            self.say(USER_PROMPT, end="")
            try:
                line = self.read_line()
            except KeyboardInterrupt:
                line = ""
            if not line:  # end of input
                self.say()
                return 0
            if self.echo:
                self.say(line.rstrip("\n"))
            text = line.strip()
            if not text:
                continue
            if text.startswith("/"):
                if self.command(text) == "quit":
                    return 0
                continue
            self.stream_answer(lambda text=text: self.session.ask(text))

    # ------------------------------------------------------------------ answers
    def stream_answer(self, start: Callable[[], Iterator[str]]) -> None:
        self.say(ASSISTANT_PROMPT, end="")
        started = False
        try:
            for piece in start():
                if not started:
                    piece = piece.lstrip()
                    started = bool(piece)
                self.say(piece, end="")
            self.say()
        except KeyboardInterrupt:
            self.say("\n[interrupted; this answer is not kept]")
        except Exception as err:  # a model failure must not end the chat
            self.say(f"\n[error] the model failed: {type(err).__name__}: {err}")

    # ------------------------------------------------------------------ commands
    def command(self, text: str) -> str | None:
        name, _, arg = text.partition(" ")
        arg = arg.strip()
        if name in ("/quit", "/exit"):
            return "quit"
        if name == "/help":
            self.say(HELP)
        elif name == "/reset":
            self.session.reset()
            self.say("New conversation (same image).")
        elif name == "/image":
            self.load(arg)
        elif name == "/ask":
            self.ask_questions(arg)
        elif name == "/q":
            self.send_suggestion(arg)
        else:
            self.say(f"Unknown command {name}; /help lists the commands.")
        return None

    def load(self, path: str) -> None:
        if not path:
            self.say("Usage: /image PATH")
            return
        try:
            image = load_image(path)
        except ImageLoadError as err:
            self.say(f"[error] {image_error_message(err, path)}. Keeping the current image.")
            return
        self.session.set_image(image)
        self.say(f"Loaded {path} ({image.width}x{image.height}); new conversation.")

    def ask_questions(self, arg: str) -> None:
        try:
            k = int(arg) if arg else DEFAULT_SQ_K
        except ValueError:
            k = 0
        if not 1 <= k <= MAX_SQ_K:
            self.say(f"Usage: /ask [K] with 1 <= K <= {MAX_SQ_K}")
            return
        if self.session.image is None:
            self.say("No image: load one with /image PATH first.")
            return
        self.say(f"The model asks {k} question(s) about the image...")
        try:
            questions = self.session.self_questions(k)
        except Exception as err:
            self.say(f"[error] the model failed: {type(err).__name__}: {err}")
            return
        if not questions:
            self.say("The model asked no questions this time; try /ask again.")
            return
        for n, question in enumerate(questions, 1):
            self.say(f"  {n}. {question}")
        self.say("Send one with /q N.")

    def send_suggestion(self, arg: str) -> None:
        questions = self.session.suggestions
        if not questions:
            self.say("No questions yet: run /ask first.")
            return
        try:
            n = int(arg)
        except ValueError:
            n = 0
        if not 1 <= n <= len(questions):
            self.say(f"Usage: /q N with 1 <= N <= {len(questions)}")
            return
        question, stream = self.session.ask_suggestion(n - 1)
        self.say(f"{USER_PROMPT}{question}")
        self.stream_answer(lambda: stream)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")
    image = None
    if args.image_file:
        try:
            image = load_image(args.image_file)
        except ImageLoadError as err:
            print(f"error: {image_error_message(err, args.image_file)}", file=sys.stderr)
            return 2
    engine = flags.load_engine_or_exit(args)
    settings = flags.decoding_from_args(args)
    session = ChatSession(engine, image, settings, sq=flags.sq_from_args(args, GenerationSettings()))
    return ChatCLI(session, sys.stdin.readline, sys.stdout, echo=not sys.stdin.isatty()).run()


if __name__ == "__main__":
    sys.exit(main())
