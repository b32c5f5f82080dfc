"""LLaVA-format records: validation into (kind, text) turns, the SQ (VUSER) conversion, and template filling.

A record is `{"id", "image"?, "conversations": [{"from": "human"|"gpt"|"vuser", "value": str}, ...]}`
(docs/reference.md#records-and-the-image-marker). `normalize_conversations` checks it and returns turns whose kind is "user", "assistant" or
"vuser"; nothing in the text is changed except the reference's move of the `<image>` marker to the front
of the first question. Every problem raises `BadRecordError` with a machine-readable `kind`.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_TOKEN
from llava.conversation import Conversation, SeparatorStyle, TemplateError, get_template

Turn = tuple[str, str]  # (kind, text); kind in TURN_KINDS

TURN_KINDS = ("user", "assistant", "vuser")
QUESTION_KINDS = ("user", "vuser")

# "from" values accepted in the data, mapped to turn kinds.
ROLE_ALIASES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "vuser": "vuser",
}


class BadRecordError(ValueError):
    """A record that cannot be trained on; `kind` is a short machine-readable reason.

    Kinds: malformed, non_string, empty_turn, role_order, missing_image_marker, extra_image_marker,
    misplaced_image_marker, template_mismatch, no_trained_tokens, too_long, missing_image.
    """

    def __init__(self, kind: str, reason: str, *, record_id: object = None, index: int | None = None):
        self.kind = kind
        self.record_id = record_id
        self.index = index
        self.reason = reason
        super().__init__(f"bad record {describe_record(record_id, index)}: [{kind}] {reason}")

    def __reduce__(self):  # picklable across DataLoader workers despite the keyword-only arguments
        return _rebuild_bad_record, (self.kind, self.reason, self.record_id, self.index)


def _rebuild_bad_record(kind: str, reason: str, record_id: object, index: int | None) -> BadRecordError:
    return BadRecordError(kind, reason, record_id=record_id, index=index)


def describe_record(record_id: object = None, index: int | None = None) -> str:
    """'id=... (index N)' for messages; either part may be unknown."""
    parts = []
    if record_id is not None:
        parts.append(f"id={record_id!r}")
    if index is not None:
        parts.append(f"index {index}" if not parts else f"(index {index})")
    return " ".join(parts) or "<unknown>"


def normalize_conversations(record: dict, *, has_image: bool, index: int | None = None) -> list[Turn]:
    """Validate a LLaVA record and return its turns as (kind, text) pairs.

    Questions ("user" or "vuser") and answers alternate, starting with a question and ending with an
    answer. With `has_image`, the first question holds exactly one `<image>` marker, which is moved to the
    front as the reference does (`"<image>\\n" + rest.strip()`); a marker anywhere else is an error.
    """
    record_id = record.get("id") if isinstance(record, dict) else None

    def bad(kind: str, reason: str) -> BadRecordError:
        return BadRecordError(kind, reason, record_id=record_id, index=index)

    if not isinstance(record, dict):
        raise bad("malformed", f"a record must be a JSON object, got {type(record).__name__}")
    conversations = record.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        raise bad("malformed", "'conversations' must be a non-empty list")

    turns: list[Turn] = []
    for j, turn in enumerate(conversations):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise bad("malformed", f"turn {j} must be an object with 'from' and 'value'")
        role, value = turn["from"], turn["value"]
        if not isinstance(role, str) or role.lower() not in ROLE_ALIASES:
            raise bad("malformed", f"turn {j} has unknown 'from' {role!r}; expected one of {sorted(ROLE_ALIASES)}")
        if not isinstance(value, str):
            raise bad("non_string", f"turn {j} 'value' is {type(value).__name__}, not a string")
        if not value.strip():
            raise bad("empty_turn", f"turn {j} is empty")
        kind = ROLE_ALIASES[role.lower()]
        expected_question = j % 2 == 0
        if (kind in QUESTION_KINDS) != expected_question:
            want = "a question (human/vuser)" if expected_question else "an answer (gpt)"
            raise bad("role_order", f"turn {j} is {role!r} but should be {want}: turns must alternate")
        turns.append((kind, value))
    if turns[-1][0] != "assistant":
        raise bad("role_order", "the last turn must be an answer (gpt)")

    counts = [text.count(DEFAULT_IMAGE_TOKEN) for _, text in turns]
    if not has_image:
        if any(counts):
            raise bad("extra_image_marker", f"{DEFAULT_IMAGE_TOKEN} marker in a record without an image")
        return turns
    if sum(counts) == 0:
        raise bad("missing_image_marker", f"record has an image but no {DEFAULT_IMAGE_TOKEN} marker")
    if sum(counts) > 1:
        raise bad("extra_image_marker", f"{sum(counts)} {DEFAULT_IMAGE_TOKEN} markers; exactly one is allowed")
    if counts[0] != 1:
        raise bad("misplaced_image_marker", f"the {DEFAULT_IMAGE_TOKEN} marker must be in the first question")
    kind, text = turns[0]
    rest = text.replace(DEFAULT_IMAGE_TOKEN, "").strip()
    turns[0] = (kind, (DEFAULT_IMAGE_TOKEN + "\n" + rest).strip())  # reference: "<image>" alone if no text
    return turns


def sq_rng(seed: int, epoch: int, index: int) -> random.Random:
    """An RNG private to one (seed, epoch, sample index): reproducible in any worker, independent across samples."""
    digest = hashlib.sha256(f"llava-sq/{int(seed)}/{int(epoch)}/{int(index)}".encode()).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


def apply_self_questioning(turns: Sequence[Turn], sq_r: float, rng: random.Random) -> list[Turn]:
    """Turn each user question after the first into a VUSER question with probability `sq_r`
    (docs/reference.md#self-questioning-turns).

    One draw per eligible turn, in order. Eligibility for the whole sample (image samples, `v1_sq` only) is
    the caller's decision. Explicit "vuser" turns are kept as they are.
    """
    if not 0.0 <= sq_r <= 1.0:
        raise ValueError(f"sq_r must be in [0, 1], got {sq_r}")
    out = list(turns)
    for j, (kind, text) in enumerate(out):
        if j > 0 and kind == "user" and rng.random() < sq_r:
            out[j] = ("vuser", text)
    return out


def build_conversation(turns: Sequence[Turn], template_name: str, *, mm_use_im_start_end: bool = False) -> Conversation:
    """Fill a fresh copy of template `template_name` with the turns; raises TemplateError if they do not fit."""
    conv = get_template(template_name)
    conv.reset_messages()
    if conv.sep_style == SeparatorStyle.PLAIN:
        kinds = [k for k, _ in turns]
        if kinds != ["user", "assistant"] or DEFAULT_IMAGE_TOKEN not in turns[0][1]:
            raise TemplateError("the 'plain' template takes exactly one image question and one answer (caption)")
    role_of = {"user": conv.roles[0], "assistant": conv.roles[1], "vuser": conv.vuser_role}
    for kind, text in turns:
        if kind not in role_of:
            raise TemplateError(f"unknown turn kind {kind!r}")
        if kind == "vuser" and conv.vuser_role is None:
            raise TemplateError(
                f"template {template_name!r} has no VUSER role; self-questioning turns need the 'v1_sq' template"
            )
        if mm_use_im_start_end and DEFAULT_IMAGE_TOKEN in text:
            text = text.replace(DEFAULT_IMAGE_TOKEN, DEFAULT_IM_START_TOKEN + DEFAULT_IMAGE_TOKEN + DEFAULT_IM_END_TOKEN)
        conv.append_message(role_of[kind], text)
    return conv
