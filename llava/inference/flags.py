"""The one definition of the model, decoding and self-questioning flags, and of loading an engine from them.

Every program that generates (the benchmark entry points, `visual_sq`, the CLI chat and the web demo) adds its
flags here; what differs between them is only the defaults each passes in (`Defaults`, `SQDefaults`): benchmarks
decode greedily with a fixed seed, the chat samples at temperature 0.2 with a fresh seed per request, and each
self-questioning entry point keeps the reference's question sampling (docs/reference.md#question-generation,
docs/reference.md#test-time-self-questioning).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from llava.inference.engine import GenerationSettings, InferenceEngine
from llava.inference.self_questioning import SQ_CONV_MODE, SQSettings
from llava.mm_utils import ASPECT_RATIOS
from llava.model.attention import ATTN_IMPLEMENTATIONS

# The full merged model that `bash scripts/quickstart.sh` writes; the chat's model when no --model-path is given.
QUICKSTART_CHECKPOINT = Path("checkpoints") / "sqllava-tiny"
BUILD_HINT = "run `bash scripts/quickstart.sh` to build it"
REPO_ROOT = Path(__file__).resolve().parents[2]


class MissingModelError(RuntimeError):
    """No checkpoint where one was expected; the message says how to get one."""


@dataclasses.dataclass(frozen=True)
class Defaults:
    """A program's defaults for the model and decoding flags."""

    temperature: float = 0.0
    top_p: float | None = None
    top_k: int | None = None
    max_new_tokens: int = 128
    seed: int | None = 0
    model_path_required: bool = True  # False: the quickstart checkpoint stands in (chat programs)

    def replace(self, **changes: object) -> Defaults:
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class SQDefaults:
    """A program's defaults for the self-questioning flags. `answer_flag` adds `--sq` (answer after the model
    questioned the image); `n_shot` None leaves out `--n_shot`; `question_flags` False leaves the question
    sampling to the main decoding flags (for programs whose output is the questions)."""

    n_shot: int | None = 3
    temperature: float = 1.0
    top_p: float = 0.65
    top_k: int = 50
    max_new_tokens: int = 100
    description_max_new_tokens: int = 1024
    answer_flag: bool = True
    question_flags: bool = True


BENCHMARK = Defaults()
CHAT = Defaults(temperature=0.2, max_new_tokens=512, seed=None, model_path_required=False)
# The chat's question sampling: the reference loader's (temperature 1, top-p 0.65, top-k 50), not its demo's
# (docs/reference.md#d24-demo-question-sampling); the chat asks with the "ask" button or /ask, not with --sq.
DEMO_QUESTIONS = SQDefaults(n_shot=None, temperature=1.0, top_p=0.65, top_k=50, max_new_tokens=100,
                            answer_flag=False)


# ---------------------------------------------------------------------- flags
def add_model_args(parser: argparse.ArgumentParser, defaults: Defaults = BENCHMARK) -> None:
    """Which checkpoint to load and how: --model-path, --model-base, --vision-tower, --lora-pretrain, --conv-mode,
    preprocessing, device, dtype, 4/8-bit quantisation (exclusive)."""
    g = parser.add_argument_group("model")
    if defaults.model_path_required:
        g.add_argument("--model-path", "--model_path", dest="model_path", required=True, help="checkpoint directory")
    else:
        g.add_argument("--model-path", "--model_path", dest="model_path", default=None,
                       help=f"checkpoint directory (default: {QUICKSTART_CHECKPOINT}, built by scripts/quickstart.sh)")
    g.add_argument("--model-base", "--model_base", dest="model_base", default=None,
                   help="base LLM for projector-only and LoRA checkpoints (default for LoRA: the adapter's recorded "
                        "base; the released ZachSun/sqllava-lora-7b needs "
                        "Lin-Chen/ShareGPT4V-7B_Pretrained_vit-large336-l12_vicuna-7b-v1.5)")
    g.add_argument("--vision-tower", "--vision_tower", dest="vision_tower", default=None,
                   help="CLIP tower folder or hub id replacing config.json's mm_vision_tower (e.g. a path that "
                        "existed only on the machine that trained the checkpoint)")
    g.add_argument("--lora-pretrain", "--lora_pretrain", dest="lora_pretrain", default=None,
                   help="Vit-lora folder (default: <model-path>/Vit-lora when present)")
    g.add_argument("--conv-mode", "--conv_mode", dest="conv_mode", default=None,
                   help="conversation template (default: the checkpoint's, else v1)")
    g.add_argument("--image-aspect-ratio", "--image_aspect_ratio", dest="image_aspect_ratio", default=None,
                   choices=ASPECT_RATIOS, help="image preprocessing (default: the checkpoint's, as in training)")
    g.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    g.add_argument("--dtype", default=None, choices=("auto", "fp16", "bf16", "fp32"),
                   help="weights dtype (default: fp16 on GPU, fp32 on CPU)")
    g.add_argument("--attn-implementation", "--attn_implementation", dest="attn_implementation", default="auto",
                   choices=ATTN_IMPLEMENTATIONS,
                   help="auto: FlashAttention-2 where it imports and runs on the GPU, else SDPA (printed at load)")
    quant = g.add_mutually_exclusive_group()
    quant.add_argument("--load-4bit", "--load_4bit", dest="load_4bit", action="store_true")
    quant.add_argument("--load-8bit", "--load_8bit", dest="load_8bit", action="store_true")


def add_decoding_args(parser: argparse.ArgumentParser, defaults: Defaults = BENCHMARK) -> None:
    """How answers are decoded: temperature (0 = greedy), top-p/top-k, beams, length, repetition penalty, seed."""
    g = parser.add_argument_group("decoding")
    g.add_argument("--temperature", type=float, default=defaults.temperature, help="0 = greedy")
    g.add_argument("--top_p", "--top-p", dest="top_p", type=float, default=defaults.top_p)
    g.add_argument("--top_k", "--top-k", dest="top_k", type=int, default=defaults.top_k)
    g.add_argument("--num_beams", "--num-beams", dest="num_beams", type=int, default=1)
    g.add_argument("--max_new_tokens", "--max-new-tokens", dest="max_new_tokens", type=int,
                   default=defaults.max_new_tokens)
    g.add_argument("--repetition_penalty", "--repetition-penalty", dest="repetition_penalty", type=float, default=None)
    seed_help = ("seed of sampled decoding, per batch" if defaults.seed is not None
                 else "seed of sampled answers and questions (default: a fresh one per request)")
    g.add_argument("--seed", type=int, default=defaults.seed, help=seed_help)


def add_sq_args(parser: argparse.ArgumentParser, defaults: SQDefaults = SQDefaults()) -> None:
    """Self-questioning: how many questions, how they are sampled, how long the description and questions are."""
    g = parser.add_argument_group("self-questioning (v1_sq template)")
    if defaults.answer_flag:
        g.add_argument("--sq", action="store_true", help="answer after the model described and questioned the image")
    if defaults.n_shot is not None:
        g.add_argument("--n_shot", "--n-shot", dest="n_shot", type=int, default=defaults.n_shot,
                       help="self-questions per image")
    if defaults.question_flags:
        g.add_argument("--sq_temperature", "--sq-temperature", dest="sq_temperature", type=float,
                       default=defaults.temperature, help="question sampling temperature")
        g.add_argument("--sq_top_p", "--sq-top-p", dest="sq_top_p", type=float, default=defaults.top_p)
        g.add_argument("--sq_top_k", "--sq-top-k", dest="sq_top_k", type=int, default=defaults.top_k)
        g.add_argument("--sq_max_new_tokens", "--sq-max-new-tokens", dest="sq_max_new_tokens", type=int,
                       default=defaults.max_new_tokens, help="length of each self-asked question")
    g.add_argument("--sq_description_max_new_tokens", "--sq-description-max-new-tokens", "--description_max_new_tokens",
                   dest="sq_description_max_new_tokens", type=int, default=defaults.description_max_new_tokens,
                   help="length of the (greedy unless sampled answers) description turn before the questions")
    g.add_argument("--sq_conv_mode", "--sq-conv-mode", dest="sq_conv_mode", default=SQ_CONV_MODE,
                   help="template of the whole SQ procedure (needs a VUSER role)")


# ---------------------------------------------------------------------- settings from flags
def decoding_from_args(args: argparse.Namespace) -> GenerationSettings:
    return GenerationSettings(
        temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, num_beams=args.num_beams,
        max_new_tokens=args.max_new_tokens, repetition_penalty=args.repetition_penalty, seed=args.seed,
    )


def sq_from_args(args: argparse.Namespace, answers: GenerationSettings) -> SQSettings | None:
    """SQSettings from the flags; None when the program has none, or has `--sq` and it was not given. Self-answers and the
    description use `answers` (the description with its own length); questions use the `--sq_*` sampling flags,
    or, where the program has none (its output is the questions), the main decoding flags, with a greedy
    description. An evaluation protocol (llava.eval.protocol) may also set, without flags: `sq_qa_role`,
    `sq_layout`, `sq_describe_prompt` and `sq_answer_max_new_tokens` (the self-answers' length)."""
    if not hasattr(args, "sq_conv_mode") or not getattr(args, "sq", True):
        return None  # the program has no self-questioning flags, or has `--sq` and it was not given
    if hasattr(args, "sq_temperature"):
        questions = GenerationSettings(temperature=args.sq_temperature, top_p=args.sq_top_p, top_k=args.sq_top_k,
                                       max_new_tokens=args.sq_max_new_tokens, seed=args.seed)
    else:  # the program's output is the questions: its decoding flags sample them, the description is greedy
        questions, answers = decoding_from_args(args), GenerationSettings()
    answer_length = getattr(args, "sq_answer_max_new_tokens", None)
    return SQSettings(
        n_shot=getattr(args, "n_shot", SQSettings.n_shot),
        questions=questions,
        answers=answers.replace(max_new_tokens=answer_length) if answer_length else answers,
        description=answers.replace(max_new_tokens=args.sq_description_max_new_tokens),
        conv_mode=args.sq_conv_mode,
        describe_prompt=getattr(args, "sq_describe_prompt", None) or SQSettings.describe_prompt,
        qa_role=getattr(args, "sq_qa_role", None) or SQSettings.qa_role,
        layout=getattr(args, "sq_layout", None) or SQSettings.layout,
    )


def sq_from_defaults(defaults: SQDefaults = DEMO_QUESTIONS, seed: int | None = None) -> SQSettings:
    """The SQSettings a program gets when none of its self-questioning flags is given (greedy description)."""
    parser = argparse.ArgumentParser(add_help=False)
    add_sq_args(parser, dataclasses.replace(defaults, answer_flag=False))
    args = parser.parse_args([])
    args.seed = seed
    return sq_from_args(args, GenerationSettings())


# ---------------------------------------------------------------------- loading
def resolve_model_path(model_path: str | os.PathLike | None) -> str:
    """`model_path` when given (it must exist), else the quickstart checkpoint (relative to the working directory,
    then to the repository)."""
    if model_path is not None:
        path = Path(model_path)
        if not path.exists():
            raise MissingModelError(f"--model-path {path} does not exist")
        return str(path)
    for path in (Path.cwd() / QUICKSTART_CHECKPOINT, REPO_ROOT / QUICKSTART_CHECKPOINT):
        if (path / "config.json").is_file():
            return str(path)
    raise MissingModelError(
        f"no --model-path given and the default model {QUICKSTART_CHECKPOINT} (the quickstart's full merged "
        f"checkpoint) is missing: {BUILD_HINT}, or pass --model-path"
    )


def load_engine(args: argparse.Namespace) -> InferenceEngine:
    """The engine for the model flags; raises MissingModelError (with the build hint) when there is no model."""
    return InferenceEngine.from_pretrained(
        resolve_model_path(args.model_path), args.model_base, lora_pretrain=args.lora_pretrain,
        vision_tower=getattr(args, "vision_tower", None),
        load_4bit=args.load_4bit, load_8bit=args.load_8bit, device=args.device, dtype=args.dtype,
        conv_mode=args.conv_mode, image_aspect_ratio=args.image_aspect_ratio,
        attn_implementation=getattr(args, "attn_implementation", "auto"),
    )


def load_engine_or_exit(args: argparse.Namespace) -> InferenceEngine:
    """`load_engine`, with a one-line message and exit status 2 (no model) or 1 (unloadable) instead of a traceback."""
    try:
        return load_engine(args)
    except MissingModelError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except (OSError, ValueError, KeyError) as err:
        print(f"error: cannot load the model {args.model_path or QUICKSTART_CHECKPOINT}: {err}", file=sys.stderr)
        raise SystemExit(1) from None
