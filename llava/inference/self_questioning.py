"""Test-time self-questioning in the training format: describe, ask K VUSER questions, answer, then ask.

How it differs from the reference: docs/reference.md#test-time-self-questioning.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence
from typing import Any

from PIL import Image

from llava.constants import (
    ANSWER_FORMAT_INSTRUCTIONS,
    DEFAULT_IM_END_TOKEN,
    DEFAULT_IM_START_TOKEN,
    DEFAULT_IMAGE_TOKEN,
)
from llava.conversation import Conversation, Segment, SeparatorStyle, get_template
from llava.inference.engine import GenerationSettings, InferenceEngine, Request

DESCRIBE_PROMPT = "Can you describe the image in detail?"
SQ_CONV_MODE = "v1_sq"
QA_ROLES = ("vuser", "user")  # the role of the self-asked questions in the final prompt
# "description": questions are asked after the description (training format; the reference's loader and science);
# "image": questions are asked in a VUSER turn that holds only the image (the reference's model_cap).
LAYOUTS = ("description", "image")


def _default_question_settings() -> GenerationSettings:
    return GenerationSettings(temperature=1.0, top_p=0.65, top_k=50, max_new_tokens=100, seed=0)


@dataclasses.dataclass
class SQSettings:
    """How the self-questioning context is made. `questions` samples the VUSER questions (the reference loader's defaults);
    `answers` answers them and `description` writes the first turn (both greedy unless told otherwise)."""

    n_shot: int = 3
    questions: GenerationSettings = dataclasses.field(default_factory=_default_question_settings)
    answers: GenerationSettings = dataclasses.field(default_factory=GenerationSettings)
    description: GenerationSettings = dataclasses.field(default_factory=lambda: GenerationSettings(max_new_tokens=1024))
    conv_mode: str = SQ_CONV_MODE
    describe_prompt: str = DESCRIBE_PROMPT
    qa_role: str = "vuser"  # "user": the self-asked questions become USER turns in the final prompt (reference)
    layout: str = "description"  # see LAYOUTS

    def __post_init__(self) -> None:
        if self.n_shot < 0:
            raise ValueError(f"n_shot must be >= 0, got {self.n_shot}")
        template = get_template(self.conv_mode)
        if template.vuser_role is None:
            raise ValueError(f"self-questioning needs a template with a VUSER role (v1_sq), not {self.conv_mode!r}")
        if self.qa_role not in QA_ROLES or self.layout not in LAYOUTS:
            raise ValueError(f"qa_role must be one of {QA_ROLES} and layout one of {LAYOUTS}, got "
                             f"{self.qa_role!r}, {self.layout!r}")
        if self.layout == "image" and template.sep_style is not SeparatorStyle.TWO:
            raise ValueError(f"the image layout needs a two-separator template (v1_sq), not {self.conv_mode!r}")

    def as_dict(self) -> dict[str, Any]:
        out = {
            "n_shot": self.n_shot, "conv_mode": self.conv_mode, "describe_prompt": self.describe_prompt,
            "questions": self.questions.as_dict(), "answers": self.answers.as_dict(),
            "description": self.description.as_dict(),
        }
        # Only when not the default, so that answer files written before these options existed still resume.
        if self.qa_role != "vuser":
            out["qa_role"] = self.qa_role
        if self.layout != "description":
            out["layout"] = self.layout
        return out


@dataclasses.dataclass
class SQContext:
    """An image's self-made context: its description and the (question, answer) pairs the model asked itself."""

    description: str
    qa: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"description": self.description, "qa": [{"question": q, "answer": a} for q, a in self.qa]}


def _clean(text: str) -> str:
    """Generated text placed back into a prompt must not add image placeholders."""
    for marker in (DEFAULT_IM_START_TOKEN, DEFAULT_IM_END_TOKEN, DEFAULT_IMAGE_TOKEN):
        text = text.replace(marker, "")
    return text.strip()


def context_conversation(
    engine: InferenceEngine, context: SQContext | None, question: str | None = None, *,
    description: str | None = None, vuser_cue: bool = False, conv_mode: str = SQ_CONV_MODE,
    describe_prompt: str = DESCRIBE_PROMPT, qa_role: str = "vuser",
) -> Conversation:
    """[USER <image> describe, ASSISTANT description, (VUSER q, ASSISTANT a)..., then one cue]:
    `question` -> USER question + ASSISTANT cue; `vuser_cue` -> VUSER cue (ends "...</s>VUSER:");
    neither -> ASSISTANT cue after the description question (the description request itself).
    `qa_role` "user" writes the self-asked questions as USER turns (the reference's final prompt)."""
    conv = get_template(conv_mode)
    conv.reset_messages()
    user, assistant = conv.roles
    question_role = user if qa_role == "user" else conv.vuser_role
    conv.append_message(user, engine.with_images(describe_prompt, 1))
    if context is None and description is None:
        conv.append_message(assistant, None)
        return conv
    conv.append_message(assistant, context.description if context is not None else description)
    for q, a in context.qa if context is not None else []:
        conv.append_message(question_role, q)
        conv.append_message(assistant, a)
    if vuser_cue:
        conv.append_message(conv.vuser_role, None)
    elif question is not None:
        conv.append_message(user, question)
        conv.append_message(assistant, None)
    return conv


@dataclasses.dataclass
class _OpenTurn(Conversation):
    """A conversation followed by literal text that starts a turn the model continues (a reference prompt that
    the message API cannot express)."""

    tail: str = ""

    def render(self) -> list[Segment]:
        return [*super().render(), Segment(self.tail)]


def _image_turn(engine: InferenceEngine, sq: SQSettings, question: str | None = None) -> Conversation:
    """The reference model_cap's question prompt "<system> VUSER: <image>\\n " (a VUSER turn holding only the image,
    continued by the model with a question; no description); with `question`, the answer cue after it:
    "<system> VUSER: <image>\\n q</s> ASSISTANT:"."""
    template = get_template(sq.conv_mode)
    tail = f"{template.vuser_role}: {engine.image_placeholder()}\n{template.sep}"
    if question is not None:
        tail += question + (template.sep2 or "") + template.sep + template.roles[1] + ":"
    fields = {f.name: getattr(template, f.name) for f in dataclasses.fields(Conversation)}
    return _OpenTurn(**{**fields, "messages": []}, tail=tail)


def _question_answer_conversation(engine: InferenceEngine, description: str, question: str, sq: SQSettings) -> Conversation:
    """The training format of a self-asked question: "...</s>VUSER: q</s> ASSISTANT:" (no token splicing,
    docs/reference.md#d20-self-questioning-prompt-format)."""
    if sq.layout == "image":
        return _image_turn(engine, sq, question)
    conv = context_conversation(engine, SQContext(description), None, conv_mode=sq.conv_mode,
                                describe_prompt=sq.describe_prompt)
    conv.append_message(conv.vuser_role, question)
    conv.append_message(conv.roles[1], None)
    return conv


def describe(engine: InferenceEngine, images: Sequence[Image.Image], sq: SQSettings, batch_size: int = 8,
             ids: Sequence[Any] | None = None) -> list[str]:
    """First turn: a detailed description of every image."""
    ids = list(ids) if ids is not None else list(range(len(images)))
    requests = [
        Request(context_conversation(engine, None, conv_mode=sq.conv_mode, describe_prompt=sq.describe_prompt),
                [img], ("describe", i))
        for img, i in zip(images, ids)
    ]
    return [_clean(t) for t in engine.generate(requests, sq.description, batch_size)]


def sample_questions(
    engine: InferenceEngine, images: Sequence[Image.Image], descriptions: Sequence[str], k: int,
    settings: GenerationSettings, batch_size: int = 8, ids: Sequence[Any] | None = None, sq: SQSettings | None = None,
) -> list[list[str]]:
    """K questions per image, each sampled independently from the same VUSER cue; empty samples are dropped."""
    sq = sq or SQSettings()
    ids = list(ids) if ids is not None else list(range(len(images)))
    requests = []
    for img, desc, i in zip(images, descriptions, ids):
        if sq.layout == "image":
            conv = _image_turn(engine, sq)
        else:
            conv = context_conversation(engine, SQContext(desc), vuser_cue=True, conv_mode=sq.conv_mode,
                                        describe_prompt=sq.describe_prompt)
        requests += [Request(conv, [img], ("question", i, j)) for j in range(k)]
    texts = [_clean(t) for t in engine.generate(requests, settings, batch_size)]
    return [[q for q in texts[n * k : (n + 1) * k] if q] for n in range(len(images))]


@dataclasses.dataclass(frozen=True)
class SelfQuestion:
    """A question the model asked, as shown to a person (`text`) and as sent back to the model (`prompt`: with the
    answer-format instruction the model wrote, the form it was trained to answer)."""

    text: str
    prompt: str


def tidy_question(raw: str, conv_mode: str = SQ_CONV_MODE) -> SelfQuestion | None:
    """A sampled question fit to show a person, or None when it is not one.

    The text is cut where the model started another turn without ending this one ("...largeVUSER: What..."),
    the answer-format instruction it learned from the training data is moved from `text` to `prompt` only, and
    what is left must be a question: non-empty and ending in "?"."""
    template = get_template(conv_mode)
    text = _clean(raw)
    roles = {*template.roles, template.vuser_role or template.roles[0]}
    cut = min((i for i in (text.find(f"{role}:") for role in roles) if i >= 0), default=-1)
    if cut >= 0:
        text = text[:cut].strip()
    prompt = text
    for instruction in ANSWER_FORMAT_INSTRUCTIONS:
        if instruction in text:
            text = text[: text.index(instruction)].strip()
            prompt = f"{text}\n{instruction}" if text else ""
    if len(text) < 2 or not text.endswith("?") or "\n" in text:
        return None
    return SelfQuestion(text, prompt)


def ask_questions(
    engine: InferenceEngine, image: Image.Image, k: int, settings: GenerationSettings | None = None, *,
    description: str | None = None, sq: SQSettings | None = None, rounds: int = 3,
) -> list[SelfQuestion]:
    """Up to K distinct self-questions about one image, tidied for people (the demo's and the CLI's "ask" button;
    `tidy_question`); describes the image first unless given. Samples K at a time, at most `rounds` times, until
    K distinct questions are kept."""
    sq = sq or SQSettings(n_shot=k)
    settings = settings or sq.questions
    if description is None:
        description = describe(engine, [image], sq, 1)[0]
    # The image's content is part of the request ids that seed the sampling: a fixed seed gives each image its
    # own reproducible draws, not the same draws for every image.
    ids = [("image", zlib.crc32(image.tobytes()), image.size)]
    kept: dict[str, SelfQuestion] = {}
    for round_ in range(rounds):
        if settings.seed is not None and round_:
            settings = settings.replace(seed=settings.seed + 1)
        for raw in sample_questions(engine, [image], [description], k, settings, max(k, 1), ids, sq=sq)[0]:
            question = tidy_question(raw, sq.conv_mode)
            if question is not None and len(kept) < k:
                kept.setdefault(question.text.lower(), question)
        if len(kept) >= k or settings.temperature == 0:
            break
    return list(kept.values())


def build_contexts(
    engine: InferenceEngine, images: Sequence[Image.Image], sq: SQSettings, batch_size: int = 8,
    ids: Sequence[Any] | None = None,
) -> list[SQContext]:
    """Describe each image, sample `n_shot` questions for it and answer them; batched over images."""
    if not images:
        return []
    ids = list(ids) if ids is not None else list(range(len(images)))
    descriptions = describe(engine, images, sq, batch_size, ids)
    questions = sample_questions(engine, images, descriptions, sq.n_shot, sq.questions, batch_size, ids, sq)
    requests = [
        Request(_question_answer_conversation(engine, desc, q, sq), [img], ("answer", i, j))
        for img, desc, qs, i in zip(images, descriptions, questions, ids)
        for j, q in enumerate(qs)
    ]
    answers = iter(_clean(a) for a in engine.generate(requests, sq.answers, batch_size))
    return [SQContext(desc, [(q, next(answers)) for q in qs]) for desc, qs in zip(descriptions, questions)]


def answer_with_self_questioning(
    engine: InferenceEngine, images: Sequence[Image.Image | None], questions: Sequence[str], sq: SQSettings,
    settings: GenerationSettings, batch_size: int = 8, ids: Sequence[Any] | None = None,
) -> list[tuple[str, SQContext | None]]:
    """Answer each question after the model questioned its image; text-only questions get no context (but the
    same template). Returns (answer, context) pairs in order."""
    ids = list(ids) if ids is not None else list(range(len(questions)))
    with_image = [n for n, img in enumerate(images) if img is not None]
    contexts: list[SQContext | None] = [None] * len(questions)
    built = build_contexts(engine, [images[n] for n in with_image], sq, batch_size, [ids[n] for n in with_image])
    for n, ctx in zip(with_image, built):
        contexts[n] = ctx
    requests = []
    for img, question, ctx, i in zip(images, questions, contexts, ids):
        if ctx is None:
            requests.append(engine.request(question, None, conv_mode=sq.conv_mode, id=i))
        else:
            # The image layout's final context opens with USER "<image>\n" (no description question), as the reference.
            conv = context_conversation(engine, ctx, _clean(question), conv_mode=sq.conv_mode,
                                        describe_prompt="" if sq.layout == "image" else sq.describe_prompt,
                                        qa_role=sq.qa_role)
            requests.append(Request(conv, [img], i))
    answers = engine.generate(requests, settings, batch_size)
    return list(zip(answers, contexts))
