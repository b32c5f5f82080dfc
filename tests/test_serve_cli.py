"""ChatSession and the terminal chat: multi-turn sessions through a pipe and a pseudo-terminal, commands, messages."""

from __future__ import annotations

import copy
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from serve_common import (
    EXAMPLE,
    FAST_FLAGS,
    GREEDY,
    REPO,
    demo_sq,
    reference_answers,
    subprocess_env,
    write_tiny_checkpoint,
)

from llava.inference import flags
from llava.inference.engine import InferenceEngine
from llava.mm_utils import load_image, process_images
from llava.serve import cli
from llava.serve.session import ChatSession

Q1, Q2 = "What is in the image?", "Which shape is the largest?"
# One round: the question (after the last "USER: " before the cue) and the answer (up to the next prompt).
TURN = re.compile(r"USER: ((?:(?!USER: ).)*?)\nASSISTANT: ((?:(?!\nUSER: ).)*)\n(?=USER: )", re.S)


@pytest.fixture(scope="module")
def checkpoint(shipped_foundation, tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("serve_cli") / "ckpt", shipped_foundation)


@pytest.fixture(scope="module")
def engine(checkpoint) -> InferenceEngine:
    return InferenceEngine.from_pretrained(checkpoint, device="cpu")


@pytest.fixture(scope="module")
def image():
    return load_image(EXAMPLE)


@pytest.fixture(scope="module")
def not_an_image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bad") / "notes.txt"
    path.write_text("this is not a picture\n")
    return path


def cli_command(checkpoint: Path) -> list[str]:
    return [sys.executable, "-m", "llava.serve.cli", "--model-path", str(checkpoint), "--image-file", str(EXAMPLE),
            *FAST_FLAGS]


def turns(transcript: str) -> list[tuple[str, str]]:
    return [(q.strip(), a.strip()) for q, a in TURN.findall(transcript)]


# ---------------------------------------------------------------------- ChatSession
def test_session_prompt_history_regenerate_and_reset(engine, image):
    session = ChatSession(engine, image, GREEDY)
    first = "".join(session.ask(Q1)).strip()
    second = session.answer("<image>" + Q2)  # a typed placeholder must not add an image slot
    assert [first, second] == reference_answers(engine, image, [Q1, Q2])
    assert [e.question for e in session.exchanges] == [Q1, Q2]
    assert session.conversation().get_prompt().count("<image>") == 1

    again = "".join(session.regenerate()).strip()
    assert again == second and len(session.exchanges) == 2  # greedy: the same answer replaces the last one

    session.reset()
    assert session.exchanges == [] and session.image is image
    assert session.answer(Q1) == first
    session.set_image(None)  # text-only: no placeholder, no pixels
    assert session.exchanges == [] and "<image>" not in session.conversation(Q1).get_prompt()
    assert session.answer(Q1) == reference_answers(engine, None, [Q1])[0]
    with pytest.raises(ValueError, match="empty"):
        session.ask("   ")
    with pytest.raises(ValueError, match="image"):
        session.self_questions(2)


def test_session_process_mode_never_touches_the_shared_engine(engine, image):
    wide = image.resize((96, 48))
    pad = ChatSession(engine, wide, GREEDY, image_aspect_ratio="pad")
    default = ChatSession(engine, wide, GREEDY)
    view = pad.engine_view()
    assert view is not engine and view.model is engine.model
    assert engine.image_aspect_ratio == "square" and default.engine_view() is engine
    torch.testing.assert_close(view.pixel_values([wide]), process_images([wide], engine.image_processor, "pad"))
    assert not torch.equal(view.pixel_values([wide]), engine.pixel_values([wide]))
    with pytest.raises(ValueError, match="image_aspect_ratio"):
        ChatSession(engine, wide, image_aspect_ratio="stretch")

    twin = copy.deepcopy(pad)  # what gr.State does with a default value: the model is shared, the chat is not
    assert twin.engine is engine
    pad.answer(Q1)
    assert twin.exchanges == [] and len(pad.exchanges) == 1


def test_session_self_questions(engine, image):
    session = ChatSession(engine, image, GREEDY, sq=demo_sq())
    questions = session.self_questions(2)
    assert 1 <= len(questions) <= 2 and all(q.strip() == q and q for q in questions)
    assert [s.text for s in session.suggestions] == questions and all(q.endswith("?") for q in questions)
    assert session.self_questions(2) == questions  # seeded sampling, cached description


# ---------------------------------------------------------------------- the CLI
def test_cli_multi_turn_session_through_a_pipe(checkpoint, engine, image, not_an_image):
    script = f"{Q1}\n{Q2}\n/ask 2\n/q 1\n/image {not_an_image}\n/reset\n/help\n/bogus\n{Q1}\n/quit\n"
    proc = subprocess.run(cli_command(checkpoint), input=script, capture_output=True, text=True, timeout=300,
                          env=subprocess_env(), cwd=REPO)
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-3000:]
    rounds = turns(out)
    assert len(rounds) == 4, out
    listed = re.search(r"  1\. (.*?)\n(?:  2\. .*?\n)?Send one with /q N\.", out, re.S)
    assert listed, out
    asked = listed.group(1).strip()
    assert [q for q, _ in rounds] == [Q1, Q2, asked, Q1]
    expected = reference_answers(engine, image, [Q1, Q2, asked])
    assert [a for _, a in rounds] == [*expected, expected[0]]  # after /reset the chat starts over
    assert "notes.txt is not an image" in out and "Keeping the current image." in out
    assert "New conversation (same image)." in out and "/ask [K]" in out and "Unknown command /bogus" in out


class PtyReader:
    """The terminal side of a pseudo-terminal: everything the program wrote, read as it arrives."""

    def __init__(self, fd: int):
        self.fd, self.data = fd, b""

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace").replace("\r\n", "\n")

    def read(self, until, timeout: float = 120.0) -> bool:
        deadline = time.monotonic() + timeout
        while not until(self.text):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no progress through the pty; so far:\n{self.text[-2000:]}")
            ready, _, _ = select.select([self.fd], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:  # EIO: the program closed the terminal
                    return False
                if not chunk:
                    return False
                self.data += chunk
        return True


def test_cli_under_a_pseudo_terminal(checkpoint, engine, image, not_an_image, tmp_path):
    master, slave = pty.openpty()
    with open(tmp_path / "stderr.txt", "w") as err:
        proc = subprocess.Popen(cli_command(checkpoint), stdin=slave, stdout=slave, stderr=err, env=subprocess_env(),
                                cwd=REPO, close_fds=True)
    os.close(slave)
    reader = PtyReader(master)
    try:
        for n, line in enumerate([Q1, f"/image {not_an_image}", Q2, "/quit"], start=1):
            reader.read(lambda text, n=n: text.count("USER: ") >= n)  # type only at the prompt, like a person
            os.write(master, (line + "\n").encode())
        reader.read(lambda text: False, timeout=60)  # until the program closes the terminal
        assert proc.wait(timeout=30) == 0, (tmp_path / "stderr.txt").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    out = reader.text
    assert [q for q, _ in turns(out)] == [Q1, Q2], out
    assert [a for _, a in turns(out)] == reference_answers(engine, image, [Q1, Q2])
    assert "notes.txt is not an image" in out


def test_cli_bad_start_image_is_a_message(not_an_image, capsys):
    assert cli.main(["--model-path", "unused", "--image-file", str(not_an_image)]) == 2
    assert "notes.txt is not an image" in capsys.readouterr().err


def test_cli_without_a_model_says_how_to_build_it(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(flags, "REPO_ROOT", tmp_path)  # no quickstart checkpoint anywhere
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--image-file", str(EXAMPLE)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "checkpoints/sqllava-tiny" in err and "run `bash scripts/quickstart.sh` to build it" in err

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--model-path", str(tmp_path / "nowhere")])
    assert exit_info.value.code == 2 and "does not exist" in capsys.readouterr().err
