"""Image-aware tokenization and label masks built by construction from the template's trained character spans.

`Conversation.render()` says which characters are trained; a fast tokenizer's offsets say which characters
each token covers; a token is trained iff it covers a trained character. The BOS and the image sentinel are
never trained. No length arithmetic, so there is no "tokenization mismatch" (docs/reference.md#d17-label-masks), and a sample
without any trained token is an error, never a silent all-ignore sample.

A fast tokenizer (offset mapping) is required: a slow one raises `TokenizationError`. transformers >= 5
always returns a fast LlamaTokenizer, so this costs nothing in practice.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from llava.constants import DEFAULT_IMAGE_TOKEN, IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.conversation import Conversation, TemplateError, get_template
from llava.data.records import (
    BadRecordError,
    apply_self_questioning,
    build_conversation,
    normalize_conversations,
    sq_rng,
)


class TokenizationError(RuntimeError):
    """The tokenizer cannot give the character offsets the label masks are built from."""


@dataclasses.dataclass
class TokenizedSample:
    """Token ids (image positions hold IMAGE_TOKEN_INDEX) and labels (IGNORE_INDEX where not trained).

    `truncated` counts the tokens `truncate_sample` removed from the end.
    """

    input_ids: list[int]
    labels: list[int]
    truncated: int = 0

    def __post_init__(self) -> None:
        if len(self.input_ids) != len(self.labels):
            raise ValueError(f"{len(self.input_ids)} input ids but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def num_images(self) -> int:
        return sum(1 for t in self.input_ids if t == IMAGE_TOKEN_INDEX)

    @property
    def num_trained(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE_INDEX)

    def expanded_length(self, image_token_len: int) -> int:
        """Sequence length once the model has replaced each image sentinel by `image_token_len` embeddings."""
        return len(self.input_ids) + self.num_images * (image_token_len - 1)


@dataclasses.dataclass
class TokenizedPrompt:
    """A rendered prompt with its tokenization: `spans[k]` is token k's character span in `prompt`."""

    prompt: str
    sample: TokenizedSample
    spans: list[tuple[int, int]]


# ---------------------------------------------------------------------------- reference tokenization
def _chunk_ids(tokenizer, chunks: Sequence[str]) -> list[list[int]]:
    return [tokenizer(chunk).input_ids for chunk in chunks]


def _join_chunks(chunk_ids: list[list[int]], bos_id: int | None, image_token_index: int) -> tuple[list[int], int]:
    """The reference's joining rule; returns the ids and how many leading tokens were dropped per later chunk."""
    offset = 1 if chunk_ids and chunk_ids[0] and bos_id is not None and chunk_ids[0][0] == bos_id else 0
    ids: list[int] = []
    for k, chunk in enumerate(chunk_ids):
        if k == 0:
            ids.extend(chunk)
        else:
            ids.append(image_token_index)
            ids.extend(chunk[offset:])
    return ids, offset


def tokenizer_image_token(
    prompt: str, tokenizer, image_token_index: int = IMAGE_TOKEN_INDEX, return_tensors: str | None = None
):
    """Tokenize `prompt`, replacing each `<image>` by one `image_token_index` (reference semantics, docs/reference.md#templates-and-prompt-strings).

    Each `<image>`-separated chunk is tokenized on its own; the first chunk keeps its BOS, later chunks
    lose theirs. Returns a list, or a 1-D LongTensor with `return_tensors="pt"`.
    """
    ids, _ = _join_chunks(
        _chunk_ids(tokenizer, prompt.split(DEFAULT_IMAGE_TOKEN)), tokenizer.bos_token_id, image_token_index
    )
    if return_tensors is None:
        return ids
    if return_tensors == "pt":
        import torch

        return torch.tensor(ids, dtype=torch.long)
    raise ValueError(f"unsupported return_tensors {return_tensors!r}")


# ---------------------------------------------------------------------------- masks by construction
def _trained_chars(conv: Conversation) -> tuple[str, list[bool]]:
    prompt_parts: list[str] = []
    trained: list[bool] = []
    for seg in conv.render():
        prompt_parts.append(seg.text)
        trained.extend([seg.trained] * len(seg.text))
    prompt = "".join(prompt_parts)
    # An image placeholder inside a trained span (a VUSER first question) is context, not a target:
    # untrain the marker and the whitespace around it.
    for match in re.finditer(r"\s*" + re.escape(DEFAULT_IMAGE_TOKEN) + r"\s*", prompt):
        marker = match.group().index(DEFAULT_IMAGE_TOKEN) + match.start()
        if any(trained[marker : marker + len(DEFAULT_IMAGE_TOKEN)]):
            trained[match.start() : match.end()] = [False] * (match.end() - match.start())
    return prompt, trained


def tokenize_prompt(conv: Conversation, tokenizer, image_token_index: int = IMAGE_TOKEN_INDEX) -> TokenizedPrompt:
    """Render `conv`, tokenize it exactly as `tokenizer_image_token` does, and label it from the trained spans."""
    prompt, trained = _trained_chars(conv)
    if not getattr(tokenizer, "is_fast", False):
        raise TokenizationError(
            f"{type(tokenizer).__name__} is a slow tokenizer: label masks are built from character offsets, "
            "which only fast tokenizers give. Load it with AutoTokenizer.from_pretrained(..., use_fast=True)."
        )
    chunks = prompt.split(DEFAULT_IMAGE_TOKEN)
    encodings = [tokenizer(chunk, return_offsets_mapping=True) for chunk in chunks]
    if any(enc.get("offset_mapping") is None for enc in encodings):
        raise TokenizationError(f"{type(tokenizer).__name__} returned no offset mapping; a fast tokenizer is needed")
    ids, offset = _join_chunks([enc.input_ids for enc in encodings], tokenizer.bos_token_id, image_token_index)

    labels: list[int] = []
    spans: list[tuple[int, int]] = []
    start = 0  # character position of the current chunk in the prompt
    for k, (chunk, enc) in enumerate(zip(chunks, encodings)):
        if k > 0:  # the image sentinel stands for the "<image>" text before this chunk
            labels.append(IGNORE_INDEX)
            spans.append((start - len(DEFAULT_IMAGE_TOKEN), start))
        covered = [False] * len(chunk)
        last_start = 0
        for tok, (s, e) in list(zip(enc.input_ids, enc.offset_mapping))[offset if k > 0 else 0 :]:
            if not 0 <= s <= e <= len(chunk) or (e > s and s < last_start):
                raise TokenizationError(f"inconsistent offsets {(s, e)} for a chunk of {len(chunk)} characters")
            if e > s:
                last_start = s
            covered[s:e] = [True] * (e - s)
            labels.append(tok if any(trained[start + s : start + e]) else IGNORE_INDEX)
            spans.append((start + s, start + e))
        missing = [i for i, c in enumerate(covered) if not c and trained[start + i]]
        if missing:
            raise TokenizationError(
                f"trained characters {chunk[missing[0]:missing[0] + 20]!r}... are covered by no token; "
                "the tokenizer's offsets are inconsistent with its input"
            )
        start += len(chunk) + len(DEFAULT_IMAGE_TOKEN)
    if len(labels) != len(ids):
        raise TokenizationError(f"{len(labels)} labels for {len(ids)} tokens")
    return TokenizedPrompt(prompt=prompt, sample=TokenizedSample(input_ids=ids, labels=labels), spans=spans)


def tokenize_conversation(conv: Conversation, tokenizer) -> TokenizedSample:
    """Token ids and labels of a rendered conversation; trained = answers (+ VUSER questions) with their separators."""
    return tokenize_prompt(conv, tokenizer).sample


# ---------------------------------------------------------------------------- records
def render_record(
    record: dict,
    template_name: str,
    *,
    has_image: bool,
    sq_r: float = 0.0,
    seed: int = 0,
    epoch: int = 0,
    index: int = 0,
    mm_use_im_start_end: bool = False,
) -> Conversation:
    """Validate a record, apply SQ (templates with a VUSER role, image samples only), fill the template.

    Explicit "vuser" turns of the data are kept whatever `sq_r` is (rendered with their `</s>`:
    docs/reference.md#d19-explicit-vuser-turns).
    """
    turns = normalize_conversations(record, has_image=has_image, index=index)
    template = get_template(template_name)
    if template.vuser_role is not None and has_image and sq_r > 0:
        turns = apply_self_questioning(turns, sq_r, sq_rng(seed, epoch, index))
    try:
        return build_conversation(turns, template_name, mm_use_im_start_end=mm_use_im_start_end)
    except TemplateError as exc:
        raise BadRecordError("template_mismatch", str(exc), record_id=record.get("id"), index=index) from exc


def preprocess_record(
    record: dict,
    tokenizer,
    template_name: str,
    *,
    has_image: bool,
    sq_r: float = 0.0,
    seed: int = 0,
    epoch: int = 0,
    index: int = 0,
    mm_use_im_start_end: bool = False,
) -> TokenizedSample:
    """Record -> (input_ids, labels): validation, SQ draw for (seed, epoch, index), rendering, tokenization."""
    conv = render_record(
        record, template_name, has_image=has_image, sq_r=sq_r, seed=seed, epoch=epoch, index=index,
        mm_use_im_start_end=mm_use_im_start_end,
    )
    sample = tokenize_conversation(conv, tokenizer)
    if sample.num_trained == 0:
        raise BadRecordError("no_trained_tokens", "no token is trained", record_id=record.get("id"), index=index)
    return sample


def truncate_sample(
    sample: TokenizedSample,
    max_length: int,
    image_token_len: int,
    *,
    record_id: object = None,
    index: int | None = None,
) -> TokenizedSample:
    """Cut the end so that the length *after image expansion* is <= max_length (the reference cut before:
    docs/reference.md#d17-truncation-counts-image-tokens).

    An image is never cut: if an image does not fit entirely, BadRecordError("too_long"). If nothing
    trained is left, BadRecordError("no_trained_tokens").
    """
    if image_token_len < 1 or max_length < 1:
        raise ValueError("max_length and image_token_len must be positive")
    keep = len(sample.input_ids)
    if sample.expanded_length(image_token_len) > max_length:
        length = 0
        keep = 0
        for tok in sample.input_ids:
            step = image_token_len if tok == IMAGE_TOKEN_INDEX else 1
            if length + step > max_length:
                if tok == IMAGE_TOKEN_INDEX:
                    raise BadRecordError(
                        "too_long",
                        f"the image ends at position {length + step} (image_token_len={image_token_len}), "
                        f"beyond max_length={max_length}",
                        record_id=record_id,
                        index=index,
                    )
                break
            length += step
            keep += 1
    out = TokenizedSample(
        input_ids=sample.input_ids[:keep],
        labels=sample.labels[:keep],
        truncated=sample.truncated + len(sample.input_ids) - keep,
    )
    if out.num_trained == 0:
        why = f"after truncation to {max_length}" if out.truncated else "in the sample"
        raise BadRecordError("no_trained_tokens", f"no trained token left {why}", record_id=record_id, index=index)
    return out
