"""Test oracle: a re-statement of the reference's prompt building and length-arithmetic masking
(docs/reference.md#d17-label-masks).

Deliberately independent of `llava.data`: its own `tokenizer_image_token`, its own style-TWO renderer and
the reference's round loop (`preprocess_v1`, `preprocess_v1_sq2` at HEAD, `preprocess_plain`), including the
mismatch guard, which here returns REJECTED instead of silently zeroing the labels. Only the system strings
come from `llava.conversation` (they are checked byte-for-byte elsewhere).

Inputs are already-validated turns `[(kind, text)]`, kind in {"user", "assistant", "vuser"}, with the SQ
pattern already drawn, so that both implementations see the same VUSER turns.
"""

from __future__ import annotations

IGNORE = -100
IMAGE = -200
REJECTED = "rejected"

SEP, SEP2 = " ", "</s>"
ROLES = {"user": "USER", "assistant": "ASSISTANT", "vuser": "VUSER"}


def ref_preprocess_multimodal(values: list[str]) -> list[str]:
    """The reference's move of `<image>` to the front of every turn that holds it."""
    out = []
    for value in values:
        if "<image>" in value:
            value = ("<image>\n" + value.replace("<image>", "").strip()).strip()
        out.append(value)
    return out


def ref_tokenizer_image_token(prompt: str, tokenizer, image_token_index: int = IMAGE) -> list[int]:
    chunks = [tokenizer(chunk).input_ids for chunk in prompt.split("<image>")]

    def insert_separator(xs, sep):
        return [ele for sublist in zip(xs, [sep] * len(xs)) for ele in sublist][:-1]

    input_ids: list[int] = []
    offset = 0
    if chunks and chunks[0] and chunks[0][0] == tokenizer.bos_token_id:
        offset = 1
        input_ids.append(chunks[0][0])
    for x in insert_separator(chunks, [image_token_index] * (offset + 1)):
        input_ids.extend(x[offset:])
    return input_ids


def ref_prompt_two(system: str, messages: list[tuple[str, str | None]]) -> str:
    """Reference `get_prompt` for SeparatorStyle.TWO."""
    seps = [SEP, SEP2]
    ret = system + seps[0]
    for i, (role, message) in enumerate(messages):
        if message:
            ret += role + ": " + message + seps[i % 2]
        else:
            ret += role + ":"
    return ret


def _mask(target: list[int], start: int, stop: int) -> None:
    for i in range(max(start, 0), min(stop, len(target))):
        target[i] = IGNORE


def _ids(text: str, tokenizer, has_image: bool) -> list[int]:
    return ref_tokenizer_image_token(text, tokenizer) if has_image else tokenizer(text).input_ids


def _guard(target, cur_len, input_ids, tokenizer, model_max_length):
    pad_id = tokenizer.unk_token_id  # the reference sets pad_token = unk_token for v1-style versions
    total_len = sum(1 for t in input_ids if t != pad_id)
    target[cur_len:] = [IGNORE] * max(len(target) - cur_len, 0)
    if cur_len < model_max_length and cur_len != total_len:
        return REJECTED  # the reference sets every label to IGNORE and prints a warning
    return input_ids, target


def ref_preprocess_v1(turns, tokenizer, *, has_image: bool, system: str, model_max_length: int = 2048):
    """`preprocess_v1`: returns (input_ids, labels) or REJECTED."""
    messages = []
    for j, (kind, text) in enumerate(turns):
        role = ROLES[kind]
        assert role == ("USER", "ASSISTANT")[j % 2], "v1 takes user/assistant turns only"
        messages.append((role, text))
    conversation = ref_prompt_two(system, messages)
    input_ids = _ids(conversation, tokenizer, has_image)[:model_max_length]
    target = list(input_ids)

    sep = SEP + "ASSISTANT" + ": "
    rounds = conversation.split(SEP2)
    cur_len = 1
    _mask(target, 0, cur_len)
    for rou in rounds:
        if rou == "":
            break
        parts = rou.split(sep)
        if len(parts) != 2:
            break
        parts[0] += sep
        round_len = len(_ids(rou, tokenizer, has_image))
        instruction_len = len(_ids(parts[0], tokenizer, has_image)) - 2
        _mask(target, cur_len, cur_len + instruction_len)
        cur_len += round_len
    return _guard(target, cur_len, input_ids, tokenizer, model_max_length)


def ref_preprocess_v1_sq2(turns, tokenizer, *, has_image: bool, system: str, model_max_length: int = 2048):
    """`preprocess_v1_sq2` at HEAD, with VUSER messages given as question + "</s>": (input_ids, labels) or REJECTED."""
    messages = []
    for kind, text in turns:
        messages.append((ROLES[kind], text + SEP2 if kind == "vuser" else text))
    conversation = ref_prompt_two(system, messages)
    input_ids = _ids(conversation, tokenizer, has_image)[:model_max_length]
    target = list(input_ids)

    sep = SEP + "ASSISTANT" + ": "
    sep_vur = "VUSER" + ": "
    rounds = conversation.split(SEP2)
    cur_len = 1
    _mask(target, 0, cur_len)
    for i, rou in enumerate(rounds):
        if rou == "":
            break
        parts = rou.split(sep)
        round_len = len(_ids(rou, tokenizer, has_image))
        if len(parts) == 2:  # a regular question/answer round
            parts[0] += sep
            instruction_len = len(_ids(parts[0], tokenizer, has_image)) - 2
            _mask(target, cur_len, cur_len + instruction_len)
        else:  # anything else is taken for a VUSER round
            if has_image and i == 0:
                head = rou.split("<image>\n")[0] + "<image>\n"
                sep_len = len(_ids(head, tokenizer, has_image))
            else:
                sep_len = len(_ids(sep_vur, tokenizer, has_image)) - 2
            _mask(target, cur_len, cur_len + sep_len)
        cur_len += round_len
    return _guard(target, cur_len, input_ids, tokenizer, model_max_length)


def ref_preprocess_plain(turns, tokenizer):
    """`preprocess_plain`: "<image>" + caption + "\\n"; BOS and the image sentinel masked."""
    assert len(turns) == 2 and "<image>" in turns[0][1]
    conversation = "<image>" + turns[1][1] + "\n"
    input_ids = ref_tokenizer_image_token(conversation, tokenizer)
    target = list(input_ids)
    _mask(target, 0, len(ref_tokenizer_image_token("<image>", tokenizer)))
    return input_ids, target
