"""Test-time self-questioning (SPEC 7.2/7.3) in the training format: describe, ask K VUSER questions, answer, then ask."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from PIL import Image

from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_TOKEN
from llava.conversation import Conversation, get_template
from llava.inference.engine import GenerationSettings, InferenceEngine, Request

DESCRIBE_PROMPT = "Can you describe the image in detail?"
SQ_CONV_MODE = "v1_sq"


def _default_question_settings() -> GenerationSettings:
    return GenerationSettings(temperature=1.0, top_p=0.65, top_k=50, max_new_tokens=100, seed=0)


@dataclasses.dataclass
class SQSettings:
    """How the self-questioning context is made. `questions` samples the VUSER questions (SPEC 7.3 loader defaults);
    `answers` answers them and `description` writes the first turn (both greedy unless told otherwise)."""

    n_shot: int = 3
    questions: GenerationSettings = dataclasses.field(default_factory=_default_question_settings)
    answers: GenerationSettings = dataclasses.field(default_factory=GenerationSettings)
    description: GenerationSettings = dataclasses.field(default_factory=lambda: GenerationSettings(max_new_tokens=1024))
    conv_mode: str = SQ_CONV_MODE
    describe_prompt: str = DESCRIBE_PROMPT

    def __post_init__(self) -> None:
        if self.n_shot < 0:
            raise ValueError(f"n_shot must be >= 0, got {self.n_shot}")
        if get_template(self.conv_mode).vuser_role is None:
            raise ValueError(f"self-questioning needs a template with a VUSER role (v1_sq), not {self.conv_mode!r}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "n_shot": self.n_shot, "conv_mode": self.conv_mode, "describe_prompt": self.describe_prompt,
            "questions": self.questions.as_dict(), "answers": self.answers.as_dict(),
            "description": self.description.as_dict(),
        }


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
    describe_prompt: str = DESCRIBE_PROMPT,
) -> Conversation:
    """[USER <image> describe, ASSISTANT description, (VUSER q, ASSISTANT a)..., then one cue]:
    `question` -> USER question + ASSISTANT cue; `vuser_cue` -> VUSER cue (ends "...</s>VUSER:");
    neither -> ASSISTANT cue after the description question (the description request itself)."""
    conv = get_template(conv_mode)
    conv.reset_messages()
    user, assistant = conv.roles
    conv.append_message(user, engine.with_images(describe_prompt, 1))
    if context is None and description is None:
        conv.append_message(assistant, None)
        return conv
    conv.append_message(assistant, context.description if context is not None else description)
    for q, a in context.qa if context is not None else []:
        conv.append_message(conv.vuser_role, q)
        conv.append_message(assistant, a)
    if vuser_cue:
        conv.append_message(conv.vuser_role, None)
    elif question is not None:
        conv.append_message(user, question)
        conv.append_message(assistant, None)
    return conv


def _question_answer_conversation(engine: InferenceEngine, description: str, question: str, sq: SQSettings) -> Conversation:
    """The training format of a self-asked question: "...</s>VUSER: q</s> ASSISTANT:" (no token splicing, D20)."""
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
        conv = context_conversation(engine, SQContext(desc), vuser_cue=True, conv_mode=sq.conv_mode,
                                    describe_prompt=sq.describe_prompt)
        requests += [Request(conv, [img], ("question", i, j)) for j in range(k)]
    texts = [_clean(t) for t in engine.generate(requests, settings, batch_size)]
    return [[q for q in texts[n * k : (n + 1) * k] if q] for n in range(len(images))]


def ask_questions(
    engine: InferenceEngine, image: Image.Image, k: int, settings: GenerationSettings | None = None, *,
    description: str | None = None, sq: SQSettings | None = None,
) -> list[str]:
    """K self-questions about one image (the demo's "ask me" button); describes the image first unless given."""
    sq = sq or SQSettings(n_shot=k)
    settings = settings or sq.questions
    if description is None:
        description = describe(engine, [image], sq, 1)[0]
    return sample_questions(engine, [image], [description], k, settings, max(k, 1), sq=sq)[0]


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
            conv = context_conversation(engine, ctx, _clean(question), conv_mode=sq.conv_mode,
                                        describe_prompt=sq.describe_prompt)
            requests.append(Request(conv, [img], i))
    answers = engine.generate(requests, settings, batch_size)
    return list(zip(answers, contexts))
