"""`ChatSession`: one user's multi-turn conversation about one image; the serve layer's only prompt builder."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from typing import Any

from PIL import Image

from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_TOKEN
from llava.conversation import Conversation, get_template
from llava.inference import flags
from llava.inference.engine import GenerationSettings, InferenceEngine, Request
from llava.inference.self_questioning import SelfQuestion, SQSettings, ask_questions, describe
from llava.mm_utils import ASPECT_RATIOS


@dataclasses.dataclass
class Exchange:
    """One finished round: the question as shown (typed by the user, or a self-question clicked), the model's answer
    and, when it differs from the question, the text the model was given (a self-question's answer format)."""

    question: str
    answer: str
    prompt: str | None = None


def clean_user_text(text: str) -> str:
    """User text must not smuggle image placeholders into the prompt (the image is placed by the session)."""
    for marker in (DEFAULT_IM_START_TOKEN, DEFAULT_IM_END_TOKEN, DEFAULT_IMAGE_TOKEN):
        text = text.replace(marker, "")
    return text.strip()


class ChatSession:
    """Engine + template messages + current image + decoding settings. The image (if any) is placed in the first
    user turn; a new image starts a new conversation. All generation goes through `InferenceEngine.stream`."""

    def __init__(self, engine: InferenceEngine, image: Image.Image | None = None,
                 settings: GenerationSettings | None = None, *, conv_mode: str | None = None,
                 image_aspect_ratio: str | None = None, sq: SQSettings | None = None):
        self.engine = engine
        self.conv_mode = conv_mode or engine.conv_mode
        get_template(self.conv_mode)  # unknown names fail here
        self.settings = settings or GenerationSettings()
        self.sq = sq or flags.sq_from_defaults()
        self.image: Image.Image | None = image
        self.image_aspect_ratio = image_aspect_ratio
        self.exchanges: list[Exchange] = []
        self.suggestions: list[SelfQuestion] = []
        self._description: str | None = None

    # ------------------------------------------------------------------ state
    @property
    def image_aspect_ratio(self) -> str | None:
        return self._image_aspect_ratio

    @image_aspect_ratio.setter
    def image_aspect_ratio(self, value: str | None) -> None:
        if value is not None and value not in ASPECT_RATIOS:
            raise ValueError(f"image_aspect_ratio must be one of {ASPECT_RATIOS}, got {value!r}")
        if value != getattr(self, "_image_aspect_ratio", None):
            self._description = None  # the model saw the image differently
        self._image_aspect_ratio = value

    def set_image(self, image: Image.Image | None) -> None:
        """Use another image (or none): the conversation starts over."""
        self.image = image
        self._description = None
        self.reset()

    def reset(self) -> None:
        """Forget the conversation and the suggested questions; keep the image and the settings."""
        self.exchanges = []
        self.suggestions = []

    def __deepcopy__(self, memo: dict) -> ChatSession:
        # The engine (model weights) is shared between copies; the conversation is not.
        new = copy.copy(self)
        new.exchanges = [dataclasses.replace(e) for e in self.exchanges]
        new.suggestions = list(self.suggestions)
        new.settings = self.settings.replace()
        return new

    # ------------------------------------------------------------------ prompts
    def conversation(self, question: str | None = None, history: list[Exchange] | None = None) -> Conversation:
        """The template with the history (and `question` + the assistant cue, when given)."""
        history = self.exchanges if history is None else history
        conv = get_template(self.conv_mode)
        conv.reset_messages()
        user, assistant = conv.roles
        turns = [(e.prompt or e.question, e.answer) for e in history] + ([(question, None)] if question is not None else [])
        for n, (q, a) in enumerate(turns):
            text = clean_user_text(q)
            if n == 0 and self.image is not None:
                text = self.engine.with_images(text, 1)
            conv.append_message(user, text)
            conv.append_message(assistant, a)
        return conv

    def request(self, question: str, history: list[Exchange] | None = None) -> Request:
        images = [self.image] if self.image is not None else None
        return Request(self.conversation(question, history), images)

    def engine_view(self) -> InferenceEngine:
        """The engine, or a shallow copy with this session's image preprocessing: the shared engine (and other
        users' sessions) never see another session's aspect ratio."""
        ratio = self.image_aspect_ratio
        if ratio is None or ratio == self.engine.image_aspect_ratio:
            return self.engine
        view = copy.copy(self.engine)
        view.image_aspect_ratio = ratio
        return view

    # ------------------------------------------------------------------ generation
    def ask(self, text: str, settings: GenerationSettings | None = None, *, prompt: str | None = None) -> Iterator[str]:
        """Stream the answer to `text` (or to `prompt`, recorded as `text`); the round is recorded once the answer is
        complete."""
        question = clean_user_text(text)
        if not question:
            raise ValueError("empty question")
        sent = clean_user_text(prompt) if prompt else None
        return self._stream(question, list(self.exchanges), settings, sent if sent != question else None)

    def ask_suggestion(self, index: int, settings: GenerationSettings | None = None) -> tuple[str, Iterator[str]]:
        """(the question as shown, its answer stream) for self-question `index` of `suggestions`, sent to the model
        in the form it asked it."""
        suggestion = self.suggestions[index]
        return suggestion.text, self.ask(suggestion.text, settings, prompt=suggestion.prompt)

    def regenerate(self, settings: GenerationSettings | None = None) -> Iterator[str]:
        """Answer the last question again (a new sample unless decoding is greedy); replaces the last answer."""
        if not self.exchanges:
            raise ValueError("nothing to regenerate: ask a question first")
        last = self.exchanges[-1]
        return self._stream(last.question, self.exchanges[:-1], settings, last.prompt)

    def answer(self, text: str, settings: GenerationSettings | None = None) -> str:
        """`ask`, joined."""
        return "".join(self.ask(text, settings)).strip()

    def _stream(self, question: str, history: list[Exchange], settings: GenerationSettings | None,
                prompt: str | None = None) -> Iterator[str]:
        request = self.request(prompt or question, history)
        pieces: list[str] = []
        for piece in self.engine_view().stream(request, settings or self.settings):
            pieces.append(piece)
            yield piece
        done = Exchange(question, "".join(pieces).strip(), prompt)
        self.exchanges = history + [done]

    def self_questions(self, k: int, settings: GenerationSettings | None = None) -> list[str]:
        """Up to K questions the model asks itself about the image, as shown to people
        (docs/reference.md#question-generation); the description turn is computed once per image. The questions
        are kept in `suggestions` with the form they are sent in (`ask_suggestion`)."""
        if self.image is None:
            raise ValueError("no image: self-questioning needs an image")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        engine = self.engine_view()
        sq = dataclasses.replace(self.sq, n_shot=k)
        if self._description is None:
            self._description = describe(engine, [self.image], sq, 1)[0]
        self.suggestions = ask_questions(engine, self.image, k, settings or sq.questions,
                                         description=self._description, sq=sq)
        return [s.text for s in self.suggestions]

    def info(self) -> dict[str, Any]:
        return {"conv_mode": self.conv_mode, "settings": self.settings.as_dict(),
                "image_aspect_ratio": self.engine_view().image_aspect_ratio, "rounds": len(self.exchanges)}
