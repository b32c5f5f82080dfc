"""Evaluation protocols, one declared table: `ours` (the default: batched generation, the checkpoint's template and
preprocessing) and `paper` (what the reference implementation did, per entry point, to reproduce the paper's
numbers). Applied when an entry point parses its flags (`parse_args`); a flag given on the command line keeps the
user's value, so the protocol only fills in what was not asked for.

What `paper` pins, per entry point (from the reference's sqllava/eval/*.py and scripts/eval/*.sh):

| entry point       | batch | preprocessing                 | template | decoding (greedy)  | --sq context                  |
|-------------------|-------|-------------------------------|----------|--------------------|-------------------------------|
| model_vqa_loader  | 1     | as trained (config: pad)      | v1       | 128 new tokens     | describe (128), ask after it: |
|                   |       |                               |          |                    | T 1.0 / top-p 0.65 / top-k 50,|
|                   |       |                               |          |                    | 100 tok; Qs as USER turns     |
| model_vqa         | 1     | centre crop                   | v1       | 1024               | (no --sq)                     |
| model_vqa_science | 1     | centre crop                   | v1       | 1024 (64 with --sq)| as the loader, description and|
|                   |       |                               |          |                    | self-answers 1024, describe   |
|                   |       |                               |          |                    | prompt + option-letter suffix |
| model_cap         | 1     | centre crop                   | v1       | 1024               | describe (1024), ask in a     |
|                   |       |                               |          |                    | VUSER turn holding only the   |
|                   |       |                               |          |                    | image: T 1.2 / top-p 0.95 /   |
|                   |       |                               |          |                    | top-k 300, 300 tok; answers   |
|                   |       |                               |          |                    | 1024; Qs as USER turns        |
| model_vqa_mmbench | 1     | as trained (config: pad)      | v1       | 1024               | (no --sq)                     |
| model_vqa_qbench  | 1     | centre crop                   | llava_v1 | 1024               | (no --sq)                     |

"As trained" is the checkpoint's config.json `image_aspect_ratio` (pad for SQ-LLaVA), which is what the reference's
`process_images` read; "centre crop" is the CLIP processor's resize + centre crop (`image_processor.preprocess`).
Captions: the reference cut predictions to 20 words before scoring (`eval_caption --max-words 20`, which
`PROTOCOL=paper bash scripts/eval/captioning.sh` passes).

Not reproduced: the reference's token splicing in `--sq` (two ids cut off the VUSER prompt, the ids of "ASSISTANT:"
appended to the sampled question): prompts are rendered by the template, except model_cap's question prompt, which
is the reference's text "... VUSER: <image>\\n "; the loader's and ScienceQA's question temperature, which the
reference left to the LM's generation_config.json (taken as 1.0); ScienceQA's text-only questions under `--sq`,
which the reference also "described" without an image (answered plainly here); its unseeded global RNG; and
kernel-level numerics (attention implementation, fp16 reductions).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from typing import Any

from llava.constants import SINGLE_PRED_PROMPT
from llava.inference.self_questioning import DESCRIBE_PROMPT

PROTOCOL_NAMES = ("ours", "paper")
DEFAULT_PROTOCOL = "ours"
PAPER_CAPTION_MAX_WORDS = 20  # the reference caption scorer's default --max_words

# preprocessing -> image_aspect_ratio (None: the checkpoint's config.json value, as the engine's default)
PREPROCESSING = {"as_trained": None, "crop": "square", "pad": "pad"}
_PREPROCESSING_TEXT = {"as_trained": "the checkpoint's preprocessing (pad for SQ-LLaVA)", "crop": "centre crop",
                       "pad": "pad to square"}
GREEDY = {"temperature": 0.0, "top_p": None, "top_k": None, "num_beams": 1, "repetition_penalty": None}


@dataclasses.dataclass(frozen=True)
class SQProtocol:
    """How `--sq` builds the context, as the reference's `eval_Sophon` of that entry point did
    (docs/reference.md#test-time-self-questioning)."""

    n_shot: int
    question_temperature: float
    question_top_p: float
    question_top_k: int
    question_max_new_tokens: int
    description_max_new_tokens: int
    answer_max_new_tokens: int | None = None  # the self-answers' length; None: --max_new_tokens
    final_max_new_tokens: int | None = None  # the benchmark answer's length under --sq; None: the protocol's
    qa_role: str = "user"  # the self-asked questions are USER turns in the final prompt
    layout: str = "description"  # "image": questions asked in a VUSER turn holding only the image (model_cap)
    describe_with_single_pred_prompt: bool = False  # --single-pred-prompt also suffixes the description question

    def flag_values(self) -> dict[str, Any]:
        return {"n_shot": self.n_shot, "sq_temperature": self.question_temperature, "sq_top_p": self.question_top_p,
                "sq_top_k": self.question_top_k, "sq_max_new_tokens": self.question_max_new_tokens,
                "sq_description_max_new_tokens": self.description_max_new_tokens}

    def summary(self) -> str:
        where = ("in a VUSER turn holding only the image" if self.layout == "image"
                 else "after a description")
        answers = f", {self.answer_max_new_tokens}-token self-answers" if self.answer_max_new_tokens else ""
        return (f"{self.n_shot} questions sampled {where} (T {self.question_temperature:g}, top-p "
                f"{self.question_top_p:g}, top-k {self.question_top_k}, {self.question_max_new_tokens} tokens), "
                f"a {self.description_max_new_tokens}-token description{answers}, the questions as "
                f"{self.qa_role.upper()} turns in the final prompt")


@dataclasses.dataclass(frozen=True)
class Protocol:
    """What a protocol pins for one entry point; None leaves the entry point's flag default."""

    batch_size: int | None = None
    preprocessing: str | None = None  # a PREPROCESSING key
    conv_mode: str | None = None
    max_new_tokens: int | None = None  # greedy decoding (GREEDY) with at most this many new tokens
    sq: SQProtocol | None = None

    def flag_values(self, sq_given: bool = False) -> dict[str, Any]:
        """Flag dest -> the value this protocol gives it (`sq_given`: with the --sq settings)."""
        out: dict[str, Any] = {}
        if self.batch_size is not None:
            out["batch_size"] = self.batch_size
        if self.preprocessing is not None:
            out["image_aspect_ratio"] = PREPROCESSING[self.preprocessing]
        if self.conv_mode is not None:
            out["conv_mode"] = self.conv_mode
        if self.max_new_tokens is not None:
            out.update(GREEDY, max_new_tokens=self.max_new_tokens)
        if sq_given and self.sq is not None:
            out.update(self.sq.flag_values())
            if self.sq.final_max_new_tokens is not None:
                out["max_new_tokens"] = self.sq.final_max_new_tokens
        return out

    def internal_values(self, args: argparse.Namespace, explicit: set[str]) -> dict[str, Any]:
        """Settings without a flag (read by `flags.sq_from_args`), for --sq runs of programs with SQ flags."""
        if self.sq is None or not getattr(args, "sq", False) or not hasattr(args, "sq_conv_mode"):
            return {}
        describe = DESCRIBE_PROMPT
        if self.sq.describe_with_single_pred_prompt and getattr(args, "single_pred_prompt", False):
            describe += "\n" + SINGLE_PRED_PROMPT
        out = {"sq_qa_role": self.sq.qa_role, "sq_layout": self.sq.layout, "sq_describe_prompt": describe}
        if self.sq.answer_max_new_tokens is not None and "max_new_tokens" not in explicit:
            out["sq_answer_max_new_tokens"] = self.sq.answer_max_new_tokens  # a given --max_new_tokens rules
        return out

    def summary(self) -> str:
        parts = []
        if self.batch_size is not None:
            parts.append(f"batch {self.batch_size}")
        if self.preprocessing is not None:
            parts.append(_PREPROCESSING_TEXT[self.preprocessing])
        if self.conv_mode is not None:
            parts.append(f"the {self.conv_mode} template")
        if self.max_new_tokens is not None:
            final = (f" ({self.sq.final_max_new_tokens} with --sq)"
                     if self.sq is not None and self.sq.final_max_new_tokens is not None else "")
            parts.append(f"greedy decoding up to {self.max_new_tokens} new tokens{final}")
        text = ", ".join(parts) or "the flag defaults"
        return text + (f"; with --sq: {self.sq.summary()}" if self.sq is not None else "")


_LOADER_SQ = SQProtocol(n_shot=3, question_temperature=1.0, question_top_p=0.65, question_top_k=50,
                        question_max_new_tokens=100, description_max_new_tokens=128)
PAPER: dict[str, Protocol] = {
    "model_vqa_loader": Protocol(1, "as_trained", "v1", 128, _LOADER_SQ),
    "model_vqa": Protocol(1, "crop", "v1", 1024),  # LLaVA-Bench in-the-Wild, MM-Vet
    "model_vqa_science": Protocol(1, "crop", "v1", 1024, dataclasses.replace(
        _LOADER_SQ, description_max_new_tokens=1024, answer_max_new_tokens=1024, final_max_new_tokens=64,
        describe_with_single_pred_prompt=True)),
    "model_cap": Protocol(1, "crop", "v1", 1024, SQProtocol(
        n_shot=5, question_temperature=1.2, question_top_p=0.95, question_top_k=300, question_max_new_tokens=300,
        description_max_new_tokens=1024, answer_max_new_tokens=1024, layout="image")),
    "model_vqa_mmbench": Protocol(1, "as_trained", "v1", 1024),
    "model_vqa_qbench": Protocol(1, "crop", "llava_v1", 1024),
}
# Today's behaviour: the flag defaults (batch 8, the checkpoint's template and preprocessing); Q-Bench's template.
OURS: dict[str, Protocol] = {**{name: Protocol() for name in PAPER}, "model_vqa_qbench": Protocol(conv_mode="llava_v1")}
PROTOCOLS: dict[str, dict[str, Protocol]] = {"ours": OURS, "paper": PAPER}


def get_protocol(name: str, entry_point: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; one of {PROTOCOL_NAMES}")
    if entry_point not in PROTOCOLS[name]:
        raise ValueError(f"protocol {name!r} has no entry for {entry_point!r}")
    return PROTOCOLS[name][entry_point]


def _ours_summary(entry_point: str) -> str:
    template = OURS[entry_point].conv_mode
    template_text = f"the {template} template" if template else "the checkpoint's template"
    return (f"batched (--batch-size), {template_text}, the checkpoint's preprocessing (as trained), the decoding "
            "flags' defaults")


def add_protocol_args(parser: argparse.ArgumentParser, entry_point: str) -> None:
    """--protocol {ours,paper} for a benchmark entry point (a key of PAPER)."""
    get_protocol("paper", entry_point)
    parser.set_defaults(protocol_entry_point=entry_point)
    parser.add_argument(
        "--protocol", default=DEFAULT_PROTOCOL, choices=PROTOCOL_NAMES,
        help=f"ours (default): {_ours_summary(entry_point)}. paper: what the reference did here: "
             f"{PAPER[entry_point].summary()}. Flags given on the command line win over the protocol's values "
             "(the answers' meta.json lists both).",
    )


_UNSET = object()


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """`parser.parse_args(argv)`, then the protocol's values for every flag not given on the command line.
    Sets `protocol_applied` (dest -> value the protocol set) and `protocol_flags_kept` (dest -> the value of a
    given flag that the protocol would have set)."""
    args = parser.parse_args(argv)
    entry_point = parser.get_default("protocol_entry_point")
    if entry_point is None:
        return args
    protocol = get_protocol(args.protocol, entry_point)
    wanted = {d: v for d, v in protocol.flag_values(bool(getattr(args, "sq", False))).items() if hasattr(args, d)}
    # Parse again with a marker in place of each default: a dest that keeps the marker was not on the command line.
    probe = parser.parse_args(argv, argparse.Namespace(**dict.fromkeys(wanted, _UNSET)))
    explicit = {d for d in wanted if getattr(probe, d) is not _UNSET}
    applied = {d: v for d, v in wanted.items() if d not in explicit}
    applied.update(protocol.internal_values(args, explicit))
    for dest, value in applied.items():
        setattr(args, dest, value)
    args.protocol_applied = applied
    args.protocol_flags_kept = {d: getattr(args, d) for d in sorted(explicit)}
    if args.protocol != DEFAULT_PROTOCOL:
        kept = {d: v for d, v in args.protocol_flags_kept.items() if v != wanted[d]}
        note = f"; given flags kept: {kept}" if kept else ""
        print(f"[protocol {args.protocol}] {entry_point}: {protocol.summary()}{note}", file=sys.stderr)
    return args
