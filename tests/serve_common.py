"""Helpers for the serve tests: a tiny full checkpoint, reference answers built without the serve layer, a server."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from PIL import Image

from llava.conversation import get_template
from llava.inference.engine import GenerationSettings, InferenceEngine, Request
from llava.serve import process

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "llava" / "serve" / "examples" / "shapes_2.png"
# Short everything: the tiny random model rarely stops by itself.
FAST_FLAGS = ["--temperature", "0", "--max-new-tokens", "12", "--sq-max-new-tokens", "8",
              "--sq-description-max-new-tokens", "8", "--seed", "0"]
GREEDY = GenerationSettings(temperature=0.0, max_new_tokens=12)


def demo_sq(*extra_flags: str):
    """The chat programs' self-questioning settings for FAST_FLAGS (+ extra flags), built by their own flag path."""
    from llava.inference.flags import sq_from_args
    from llava.serve.cli import build_parser

    return sq_from_args(build_parser().parse_args([*FAST_FLAGS, *extra_flags]), GenerationSettings())


def write_tiny_checkpoint(out: Path, tiny_foundation: dict) -> Path:
    """A full merged tiny LLaVA (random projector) in the layout the quickstart writes."""
    from transformers import AutoTokenizer, CLIPImageProcessor

    from llava.model.builder import load_language_model, load_vision_tower, save_pretrained_llava
    from llava.model.llava_llama import LlavaLlamaForCausalLM
    from llava.model.tiny import tiny_llava_config

    torch.manual_seed(0)
    config = tiny_llava_config(tiny_foundation["lm"], tiny_foundation["tower"], "mlp2x_gelu")
    lm = load_language_model(tiny_foundation["lm"], config, torch.float32)
    tower = load_vision_tower(config, None, torch.float32)
    model = LlavaLlamaForCausalLM(config, language_model=lm, vision_tower=tower).eval()
    save_pretrained_llava(model, out, AutoTokenizer.from_pretrained(tiny_foundation["lm"]),
                          CLIPImageProcessor.from_pretrained(tiny_foundation["tower"]))
    return out


def reference_answers(engine: InferenceEngine, image: Image.Image | None, questions: Sequence[str],
                      settings: GenerationSettings = GREEDY) -> list[str]:
    """Greedy answers of a multi-turn chat, the prompt assembled here by hand from the template (not by ChatSession)."""
    conv = get_template(engine.conv_mode)
    conv.reset_messages()
    user, assistant = conv.roles
    answers: list[str] = []
    for n, question in enumerate(questions):
        text = f"<image>\n{question}" if n == 0 and image is not None else question
        conv.append_message(user, text)
        conv.append_message(assistant, None)
        answer = engine.generate([Request(conv.copy(), [image] if image is not None else None)], settings)[0]
        conv.messages[-1][1] = answer
        answers.append(answer)
    return answers


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    # One thread per process: several processes share 2 cores in CI, and spinning OpenMP threads starve each other.
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", GRADIO_ANALYTICS_ENABLED="False", NO_COLOR="1")
    return env


@contextlib.contextmanager
def running_server(args: Sequence[str], log: Path, timeout: float = 180.0) -> Iterator[str]:
    """`llava.serve.process.running_server` with the tests' environment (one thread, offline)."""
    with process.running_server(args, log, subprocess_env(), timeout) as url:
        yield url
