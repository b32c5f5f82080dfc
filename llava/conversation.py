"""Conversation templates: render a conversation into a prompt AND mark which characters are trained.

Every prompt in the project (training, evaluation, CLI, web demo) is produced by `Conversation.render()`,
which returns the prompt as a list of `Segment`s. A segment is either context (masked in the loss) or a
trained span (assistant answers with their closing separator; VUSER questions with their `</s>`). Labels
are derived from these character spans, so there is no length arithmetic that can drift from the text.

The template strings are byte-for-byte those of the reference, including the missing space in
the `v1_sq` system prompt: released checkpoints were trained on them (docs/reference.md#templates-and-prompt-strings).
"""

from __future__ import annotations

import dataclasses
from enum import Enum, auto

from llava.constants import DEFAULT_IMAGE_TOKEN


class SeparatorStyle(Enum):
    """How messages are joined; one rendering rule per style."""

    SINGLE = auto()
    TWO = auto()
    MPT = auto()
    PLAIN = auto()
    LLAMA_2 = auto()


@dataclasses.dataclass(frozen=True)
class Segment:
    """A piece of the rendered prompt; `trained` pieces contribute to the loss."""

    text: str
    trained: bool = False


class TemplateError(ValueError):
    """A conversation cannot be rendered with this template (unknown role, misplaced message...)."""


@dataclasses.dataclass
class Conversation:
    """A prompt template plus the messages of one conversation.

    `roles` is (user, assistant); `vuser_role` is the self-questioning role of `v1_sq` (None elsewhere).
    Messages are `[role, text]` pairs; `text=None` on the last message is the generation cue.
    """

    system: str
    roles: tuple[str, str]
    messages: list[list] = dataclasses.field(default_factory=list)
    offset: int = 0
    sep_style: SeparatorStyle = SeparatorStyle.SINGLE
    sep: str = "###"
    sep2: str | None = None
    version: str = "Unknown"
    vuser_role: str | None = None

    # ------------------------------------------------------------------ familiar API
    def append_message(self, role: str, message: str | None) -> None:
        self.messages.append([role, message])

    def reset_messages(self) -> None:
        """Forget every message (keeps the template). The reference called this, but never defined it
        (docs/reference.md#d3-self-questioning-paths-run)."""
        self.messages = []

    clear_message = reset_messages  # the name the reference's SQ code paths use

    def copy(self) -> Conversation:
        return dataclasses.replace(self, messages=[[r, m] for r, m in self.messages])

    def get_prompt(self) -> str:
        return "".join(seg.text for seg in self.render())

    @property
    def all_roles(self) -> tuple[str, ...]:
        return self.roles + ((self.vuser_role,) if self.vuser_role else ())

    @property
    def stop_str(self) -> str:
        """The string that ends an assistant turn (used as a generation stop criterion)."""
        if self.sep_style in (SeparatorStyle.TWO, SeparatorStyle.LLAMA_2):
            return self.sep2 or "</s>"
        return self.sep

    def dict(self) -> dict:
        return {
            "system": self.system,
            "roles": list(self.roles),
            "messages": [[r, m] for r, m in self.messages],
            "offset": self.offset,
            "sep": self.sep,
            "sep2": self.sep2,
            "version": self.version,
        }

    # ------------------------------------------------------------------ rendering
    def _kind(self, role: str) -> str:
        if role == self.roles[0]:
            return "user"
        if role == self.roles[1]:
            return "assistant"
        if self.vuser_role is not None and role == self.vuser_role:
            return "vuser"
        raise TemplateError(f"role {role!r} is not one of {self.all_roles} of template {self.version!r}")

    def render(self) -> list[Segment]:
        """Render the messages into segments whose concatenation is the prompt."""
        messages = self.messages
        renderer = {
            SeparatorStyle.SINGLE: self._render_single,
            SeparatorStyle.TWO: self._render_two,
            SeparatorStyle.MPT: self._render_mpt,
            SeparatorStyle.PLAIN: self._render_plain,
            SeparatorStyle.LLAMA_2: self._render_llama_2,
        }[self.sep_style]
        segments = renderer(messages)
        return [s for s in segments if s.text]

    def _render_two(self, messages: list[list]) -> list[Segment]:
        # Separator alternation follows the message's list position, not its role (reference quirk kept:
        # after a VUSER question at an even index the next answer starts with " ASSISTANT:").
        seps = (self.sep, self.sep2)
        out = [Segment(self.system + seps[0])]
        for i, (role, text) in enumerate(messages):
            kind = self._kind(role)
            if not text:
                out.append(Segment(role + ":"))
                continue
            if kind == "user":
                out.append(Segment(role + ": " + text + seps[i % 2]))
            elif kind == "assistant":
                # The space after the colon is trained: a SentencePiece tokenizer merges it into the
                # answer's first token, and the reference's masks count it there.
                out += [Segment(role + ":"), Segment(" " + text + seps[i % 2], trained=True)]
            else:  # vuser: the question and its own </s> are the targets
                out += [Segment(role + ":"), Segment(" " + text + self.sep2, trained=True), Segment(seps[i % 2])]
        return out

    def _render_single(self, messages: list[list]) -> list[Segment]:
        out = [Segment(self.system + self.sep)]
        for role, text in messages:
            kind = self._kind(role)
            if not text:
                out.append(Segment(role + ":"))
            elif kind == "user":
                out.append(Segment(role + ": " + text + self.sep))
            else:
                out += [Segment(role + ":"), Segment(" " + text + self.sep, trained=True)]
        return out

    def _render_mpt(self, messages: list[list]) -> list[Segment]:
        out = [Segment(self.system + self.sep)]
        for role, text in messages:
            kind = self._kind(role)
            if not text:
                out.append(Segment(role))
            elif kind == "user":
                out.append(Segment(role + text + self.sep))
            else:
                out += [Segment(role), Segment(text + self.sep, trained=True)]
        return out

    def _render_llama_2(self, messages: list[list]) -> list[Segment]:
        out: list[Segment] = []
        for i, (role, text) in enumerate(messages):
            kind = self._kind(role)
            if i == 0 and (not text or kind != "user"):
                raise TemplateError("llama_2 conversations must start with a user message")
            if not text:
                continue
            if kind == "user":
                if i == 0:
                    text = f"<<SYS>>\n{self.system}\n<</SYS>>\n\n" + text
                # The reference strips the leading "<s>" of the first turn (ret.lstrip(sep)).
                out.append(Segment(("" if i == 0 else self.sep) + f"[INST] {text} [/INST]"))
            else:
                out.append(Segment(" " + text + " " + self.sep2, trained=True))
        return out

    def _render_plain(self, messages: list[list]) -> list[Segment]:
        # Stage-1 alignment: "<image>" + caption + "\n"; the instruction text is dropped.
        out = [Segment(self.system)]
        for i, (_role, text) in enumerate(messages):  # both roles are "": position decides
            if not text:
                continue
            if i % 2 == 0:
                out.append(Segment(DEFAULT_IMAGE_TOKEN if DEFAULT_IMAGE_TOKEN in text else text))
            else:
                out.append(Segment(text + self.sep, trained=True))
        return out


# ---------------------------------------------------------------------- the templates
_SYSTEM_V1 = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
_SYSTEM_HUMAN = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
# Byte-for-byte the reference string, including the missing space after "questions.".
_SYSTEM_SQ = (
    _SYSTEM_V1 + "Also, the artificial intelligence assistant is a curious virtual user. The virtual user asks "
    "complex questions that are relevant to the content in the image, for example, asking about background "
    "knowledge of the objects in the image, asking to discuss about events happening in the image, etc. "
    "Again, do not ask about uncertain details."
)
_SYSTEM_LLAMA_2 = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while being "
    "safe.  Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, or illegal "
    "content. Please ensure that your responses are socially unbiased and positive in nature.\n\nIf a question "
    "does not make any sense, or is not factually coherent, explain why instead of answering something not "
    "correct. If you don't know the answer to a question, please don't share false information."
)
_SYSTEM_LLAVA_LLAMA_2 = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the "
    "user provides, and assist the user with a variety of tasks using natural language."
)
_V0_EXAMPLE_ANSWER = (
    "Renewable energy sources are those that can be replenished naturally in a relatively short amount of time, "
    "such as solar, wind, hydro, geothermal, and biomass. Non-renewable energy sources, on the other hand, are "
    "finite and will eventually be depleted, such as coal, oil, and natural gas. Here are some key differences "
    "between renewable and non-renewable energy sources:\n"
    "1. Availability: Renewable energy sources are virtually inexhaustible, while non-renewable energy sources "
    "are finite and will eventually run out.\n"
    "2. Environmental impact: Renewable energy sources have a much lower environmental impact than non-renewable "
    "sources, which can lead to air and water pollution, greenhouse gas emissions, and other negative effects.\n"
    "3. Cost: Renewable energy sources can be more expensive to initially set up, but they typically have lower "
    "operational costs than non-renewable sources.\n"
    "4. Reliability: Renewable energy sources are often more reliable and can be used in more remote locations "
    "than non-renewable sources.\n"
    "5. Flexibility: Renewable energy sources are often more flexible and can be adapted to different situations "
    "and needs, while non-renewable sources are more rigid and inflexible.\n"
    "6. Sustainability: Renewable energy sources are more sustainable over the long term, while non-renewable "
    "sources are not, and their depletion can lead to economic and social instability.\n"
)

conv_vicuna_v0 = Conversation(
    system=_SYSTEM_HUMAN,
    roles=("Human", "Assistant"),
    messages=[
        ["Human", "What are the key differences between renewable and non-renewable energy sources?"],
        ["Assistant", _V0_EXAMPLE_ANSWER],
    ],
    offset=2,
    sep_style=SeparatorStyle.SINGLE,
    sep="###",
    version="v0",
)
conv_vicuna_v1 = Conversation(
    system=_SYSTEM_V1, roles=("USER", "ASSISTANT"), version="v1",
    sep_style=SeparatorStyle.TWO, sep=" ", sep2="</s>",
)
conv_llava_v1 = Conversation(
    system=_SYSTEM_HUMAN, roles=("USER", "ASSISTANT"), version="v1",
    sep_style=SeparatorStyle.TWO, sep=" ", sep2="</s>",
)
conv_v1_sq = Conversation(
    system=_SYSTEM_SQ, roles=("USER", "ASSISTANT"), vuser_role="VUSER", version="v1_sq",
    sep_style=SeparatorStyle.TWO, sep=" ", sep2="</s>",
)
conv_llama_2 = Conversation(
    system=_SYSTEM_LLAMA_2, roles=("USER", "ASSISTANT"), version="llama_v2",
    sep_style=SeparatorStyle.LLAMA_2, sep="<s>", sep2="</s>",
)
conv_llava_llama_2 = Conversation(
    system=_SYSTEM_LLAVA_LLAMA_2, roles=("USER", "ASSISTANT"), version="llama_v2",
    sep_style=SeparatorStyle.LLAMA_2, sep="<s>", sep2="</s>",
)
conv_mpt = Conversation(
    system="<|im_start|>system\nA conversation between a user and an LLM-based AI assistant. "
    "The assistant gives helpful and honest answers.",
    roles=("<|im_start|>user\n", "<|im_start|>assistant\n"), version="mpt",
    sep_style=SeparatorStyle.MPT, sep="<|im_end|>",
)
conv_llava_plain = Conversation(
    system="", roles=("", ""), version="plain", sep_style=SeparatorStyle.PLAIN, sep="\n",
)
conv_llava_v0 = Conversation(
    system=_SYSTEM_HUMAN, roles=("Human", "Assistant"), version="v0",
    sep_style=SeparatorStyle.SINGLE, sep="###",
)

default_conversation = conv_vicuna_v1
conv_templates: dict[str, Conversation] = {
    "default": conv_vicuna_v0,
    "v0": conv_vicuna_v0,
    "v1": conv_vicuna_v1,
    "vicuna_v1": conv_vicuna_v1,
    "v1_sq": conv_v1_sq,
    "llama_2": conv_llama_2,
    "plain": conv_llava_plain,
    "v0_plain": conv_llava_plain,
    "llava_v0": conv_llava_v0,
    "llava_v1": conv_llava_v1,
    "llava_llama_2": conv_llava_llama_2,
    "mpt": conv_mpt,
}


def get_template(name: str) -> Conversation:
    """A fresh copy of a registered template; unknown names list the valid ones."""
    if name not in conv_templates:
        raise KeyError(f"unknown conversation template {name!r}; choose one of {sorted(conv_templates)}")
    return conv_templates[name].copy()
