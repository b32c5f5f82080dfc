"""Tokenization and label masks: equality with the reference algorithm, masks by construction, SQ, truncation, bad records."""

from __future__ import annotations

import pickle
import random
from collections import Counter

import pytest
from reference_masking import (
    REJECTED,
    ref_preprocess_multimodal,
    ref_preprocess_plain,
    ref_preprocess_v1,
    ref_preprocess_v1_sq2,
    ref_prompt_two,
    ref_tokenizer_image_token,
)

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.conversation import conv_templates
from llava.data.records import (
    BadRecordError,
    apply_self_questioning,
    build_conversation,
    normalize_conversations,
    sq_rng,
)
from llava.data.tokenization import (
    TokenizationError,
    TokenizedSample,
    preprocess_record,
    render_record,
    tokenize_conversation,
    tokenize_prompt,
    tokenizer_image_token,
    truncate_sample,
)

SQ_R = 0.5
N_RANDOM = 240

# ---------------------------------------------------------------------------------------------- fixtures
WORDS = (
    "the cat sat on a mat Zebra photo colour red blue why how many people street café naïve façade Ångström "
    "Müller señor 日本語 猫 北京 東京タワー 😀 🚀 👍🏽 3 42 2024 3.14 1,000 50% 7th (note) e.g. don't \"quoted\" "
    "x-ray a/b #tag ! ? , . ; : — … 'single' [1] {x} <b> C++ $5 ~ ^ _ |"
).split()


def _text(rng: random.Random) -> str:
    n = rng.randint(1, 14)
    out = rng.choice(WORDS)
    for _ in range(n - 1):
        out += rng.choice([" ", " ", " ", " ", "", "\n", "  ", "\n\n", ", "]) + rng.choice(WORDS)
    r = rng.random()
    if r < 0.08:
        out = " " + out
    elif r < 0.14:
        out = out + " "
    elif r < 0.18:
        out = "\n" + out
    elif r < 0.22:
        out = out + "\n"
    elif r < 0.30:
        out = str(rng.randint(0, 99)) + " " + out  # digits right after "ASSISTANT: " split off the space
    return out


def random_record(rng: random.Random, idx: int, template: str) -> tuple[dict, bool]:
    has_image = rng.random() < 0.6
    conversations = []
    for j in range(rng.randint(1, 6)):
        role = "human"
        if template == "v1_sq" and j > 0 and rng.random() < 0.15:
            role = "vuser"  # explicit VUSER turns in the data
        conversations += [{"from": role, "value": _text(rng)}, {"from": "gpt", "value": _text(rng)}]
    if has_image:
        q = conversations[0]["value"]
        conversations[0]["value"] = rng.choice(["<image>\n" + q, q + "\n<image>", q + " <image> " + q, "<image>" + q])
    record = {"id": f"rand-{idx}", "conversations": conversations}
    if has_image:
        record["image"] = f"{idx}.jpg"
    return record, has_image


def random_corpus(seed: int = 1234, n: int = N_RANDOM):
    rng = random.Random(seed)
    return [(i, template, *random_record(rng, i, template)) for i in range(n) for template in [rng.choice(["v1", "v1_sq"])]]


def _turns_for(record, has_image, template, index, epoch=0, seed=7):
    turns = normalize_conversations(record, has_image=has_image, index=index)
    if template == "v1_sq" and has_image:
        turns = apply_self_questioning(turns, SQ_R, sq_rng(seed, epoch, index))
    return turns


def trained_runs(tp) -> list[tuple[str, list[int]]]:
    """Maximal runs of consecutive trained tokens: (the prompt text their offsets cover, their ids)."""
    runs, cur = [], None
    for tok, lab, (s, e) in zip(tp.sample.input_ids, tp.sample.labels, tp.spans):
        if lab == IGNORE_INDEX:
            cur = None
            continue
        assert lab == tok
        if cur is None:
            cur = [s, e, []]
            runs.append(cur)
        cur[1] = max(cur[1], e)
        cur[2].append(tok)
    return [(tp.prompt[s:e], ids) for s, e, ids in runs]


def expected_targets(turns) -> list[str]:
    return [" " + text + "</s>" for kind, text in turns if kind in ("assistant", "vuser")]


def _squash(text: str) -> str:
    return "".join(text.split())


# ---------------------------------------------------------------------------------------------- (a) vs reference
def test_tokenizer_image_token_matches_reference(llama_tokenizer):
    for prompt in ["<image>", "<image>\nhi", "a <image> b <image> c", "no image", "", "\n<image>\n", "5<image>5"]:
        ids = tokenizer_image_token(prompt, llama_tokenizer)
        assert ids == ref_tokenizer_image_token(prompt, llama_tokenizer)
        assert ids[0] == llama_tokenizer.bos_token_id and ids.count(llama_tokenizer.bos_token_id) == 1
        assert ids.count(IMAGE_TOKEN_INDEX) == prompt.count("<image>")
    t = tokenizer_image_token("x <image> y", llama_tokenizer, return_tensors="pt")
    assert t.dtype.is_floating_point is False and t.tolist() == tokenizer_image_token("x <image> y", llama_tokenizer)


def test_random_conversations_equal_reference_legacy(tokenizer_dir_legacy):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir_legacy)
    compared, rejected, n_vuser = 0, [], 0
    for index, template, record, has_image in random_corpus():
        turns = _turns_for(record, has_image, template, index)
        assert [t for _, t in turns] == ref_preprocess_multimodal([c["value"] for c in record["conversations"]])
        n_vuser += sum(k == "vuser" for k, _ in turns)
        ours = preprocess_record(record, tok, template, has_image=has_image, sq_r=SQ_R, seed=7, index=index)
        conv = build_conversation(turns, template)
        system = conv_templates[template].system
        # Same prompt text as the reference's renderer (VUSER messages carry their own "</s>").
        ref_messages = [(conv.all_roles[("user", "assistant", "vuser").index(k)], t + "</s>" if k == "vuser" else t)
                        for k, t in turns]
        assert conv.get_prompt() == ref_prompt_two(system, ref_messages)
        ref_fn = ref_preprocess_v1_sq2 if template == "v1_sq" else ref_preprocess_v1
        ref = ref_fn(turns, tok, has_image=has_image, system=system)
        if ref == REJECTED:
            rejected.append(record["id"])
            continue
        compared += 1
        assert ours.input_ids == ref[0], record["id"]
        assert ours.labels == ref[1], (record["id"], conv.get_prompt())
    print(f"\nreference comparison (legacy=True): {compared} compared, {len(rejected)} rejected by the reference "
          f"{rejected}, {n_vuser} VUSER turns")
    assert compared + len(rejected) == N_RANDOM
    assert n_vuser > 50
    assert len(rejected) <= N_RANDOM // 50  # measured: 0


@pytest.mark.parametrize("tokenizer_dir", ["tokenizer_dir_legacy", "tokenizer_dir_nonlegacy"])
def test_random_conversations_train_exactly_the_targets(tokenizer_dir, request):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(request.getfixturevalue(tokenizer_dir))
    ref_rejected = 0
    for index, template, record, has_image in random_corpus(seed=99, n=200):
        turns = _turns_for(record, has_image, template, index)
        conv = render_record(record, template, has_image=has_image, sq_r=SQ_R, seed=7, index=index)
        tp = tokenize_prompt(conv, tok)
        assert tp.sample.input_ids == tokenizer_image_token(tp.prompt, tok)
        assert tp.sample.num_trained > 0
        assert tp.sample.labels[0] == IGNORE_INDEX
        assert all(lab == IGNORE_INDEX for t, lab in zip(tp.sample.input_ids, tp.sample.labels) if t < 0)
        runs = trained_runs(tp)
        assert [text for text, _ in runs] == expected_targets(turns), record["id"]
        for (text, ids) in runs:
            assert _squash(tok.decode(ids)) == _squash(text)
        ref_fn = ref_preprocess_v1_sq2 if template == "v1_sq" else ref_preprocess_v1
        ref_rejected += ref_fn(turns, tok, has_image=has_image, system=conv.system) == REJECTED
    print(f"\n{tokenizer_dir}: the reference would reject {ref_rejected}/200 of these samples")


# ---------------------------------------------------------------------------------------------- (b) plain
@pytest.mark.parametrize(
    "caption", ["A cat on a mat.", "5 dogs", " leading space", "\nnewline first", "日本語のキャプション 😀", "x"]
)
def test_plain_equals_reference(llama_tokenizer, caption):
    record = {"id": "p", "image": "p.jpg",
              "conversations": [{"from": "human", "value": "Describe.\n<image>"}, {"from": "gpt", "value": caption}]}
    ours = preprocess_record(record, llama_tokenizer, "plain", has_image=True)
    turns = normalize_conversations(record, has_image=True)
    ids, labels = ref_preprocess_plain(turns, llama_tokenizer)
    assert ours.input_ids == ids and ours.labels == labels
    assert ours.input_ids[:2] == [llama_tokenizer.bos_token_id, IMAGE_TOKEN_INDEX]
    assert "Describe" not in llama_tokenizer.decode([t for t in ours.input_ids if t >= 0])


# ---------------------------------------------------------------------------------------------- (c) all templates
ALL_TEMPLATES = ["plain", "v0", "v1", "vicuna_v1", "llava_v1", "v1_sq", "llama_2", "llava_llama_2", "mpt"]


@pytest.mark.parametrize(  # plain is image-caption only (text-only: see test_template_mismatch_is_a_bad_record)
    "template, has_image", [(t, True) for t in ALL_TEMPLATES] + [(t, False) for t in ALL_TEMPLATES if t != "plain"]
)
def test_every_template_trains_answers_only(llama_tokenizer, template, has_image):
    rounds = 1 if template == "plain" else 3
    conversations = []
    for r in range(rounds):
        conversations += [{"from": "human", "value": f"questionword{r} about zebras?"},
                          {"from": "gpt", "value": f"answerword{r} says hippo."}]
    if has_image:
        conversations[0]["value"] = "<image>\n" + conversations[0]["value"]
    record = {"id": template, "conversations": conversations}
    sample = preprocess_record(record, llama_tokenizer, template, has_image=has_image)
    trained = llama_tokenizer.decode([lab for lab in sample.labels if lab != IGNORE_INDEX])
    for r in range(rounds):
        assert f"answerword{r} says hippo." in trained
    assert "questionword" not in trained and "zebras" not in trained
    assert sample.num_images == int(has_image)


def test_vuser_first_turn_trains_question_but_not_image_marker(llama_tokenizer):
    record = {"id": "vf", "conversations": [{"from": "vuser", "value": "What is odd here?\n<image>"},
                                            {"from": "gpt", "value": "Nothing."}]}
    tp = tokenize_prompt(render_record(record, "v1_sq", has_image=True), llama_tokenizer)
    assert [t for t, _ in trained_runs(tp)] == ["What is odd here?</s>", " Nothing.</s>"]
    # The reference masks one token too many here (its "<image>\n" length includes the BOS).
    turns = normalize_conversations(record, has_image=True)
    ref = ref_preprocess_v1_sq2(turns, llama_tokenizer, has_image=True, system=conv_templates["v1_sq"].system)
    assert ref != REJECTED and ref[1] != tp.sample.labels


def test_separator_strings_inside_text_are_harmless(llama_tokenizer):
    # The reference splits rounds on " ASSISTANT: " and mis-masks such data (docs/reference.md#d17-label-masks);
    # spans do not care.
    record = {"id": "sep", "conversations": [
        {"from": "human", "value": "Say ' ASSISTANT: ' please"}, {"from": "gpt", "value": "OK ASSISTANT: done"},
        {"from": "human", "value": "again"}, {"from": "gpt", "value": "fine"}]}
    tp = tokenize_prompt(render_record(record, "v1", has_image=False), llama_tokenizer)
    assert [t for t, _ in trained_runs(tp)] == [" OK ASSISTANT: done</s>", " fine</s>"]
    turns = normalize_conversations(record, has_image=False)
    ref = ref_preprocess_v1(turns, llama_tokenizer, has_image=False, system=conv_templates["v1"].system)
    assert ref == REJECTED or ref[1] != tp.sample.labels


def test_slow_tokenizer_is_refused(llama_tokenizer):
    class Slow:
        is_fast = False

        def __getattr__(self, name):
            return getattr(llama_tokenizer, name)

        def __call__(self, *a, **k):
            return llama_tokenizer(*a, **k)

    conv = build_conversation([("user", "q"), ("assistant", "a")], "v1")
    with pytest.raises(TokenizationError, match="fast"):
        tokenize_conversation(conv, Slow())


def test_vuser_needs_sq_template():
    from llava.conversation import TemplateError

    with pytest.raises(TemplateError, match="v1_sq"):
        build_conversation([("user", "q"), ("assistant", "a"), ("vuser", "q2"), ("assistant", "a2")], "v1")


# ---------------------------------------------------------------------------------------------- (d) SQ draws
def _pattern(n_rounds, sq_r, seed, epoch, index):
    turns = [("user", "q"), ("assistant", "a")] * n_rounds
    return tuple(k for k, _ in apply_self_questioning(turns, sq_r, sq_rng(seed, epoch, index)))


def test_sq_draws_reproducible_and_independent():
    assert _pattern(6, 0.5, 1, 0, 5) == _pattern(6, 0.5, 1, 0, 5)
    assert len({_pattern(6, 0.5, 1, 0, i) for i in range(40)}) > 10
    assert len({_pattern(6, 0.5, 1, e, 3) for e in range(40)}) > 10
    assert len({_pattern(6, 0.5, s, 0, 3) for s in range(40)}) > 10
    assert sq_rng(1, 2, 3).random() != sq_rng(1, 3, 2).random()


def test_sq_rule_and_rate():
    counts = Counter()
    for i in range(2000):
        pattern = _pattern(6, 0.3, 0, 0, i)
        assert pattern[0] == "user" and all(k == "assistant" for k in pattern[1::2])
        counts.update(pattern[2::2])
    rate = counts["vuser"] / (counts["vuser"] + counts["user"])
    assert abs(rate - 0.3) < 0.02, rate
    assert _pattern(6, 0.0, 0, 0, 1) == _pattern(1, 1.0, 0, 0, 1) + ("user", "assistant") * 5
    assert set(_pattern(6, 1.0, 0, 0, 1)[2::2]) == {"vuser"}
    with pytest.raises(ValueError):
        apply_self_questioning([("user", "q"), ("assistant", "a")], 1.5, random.Random(0))


def test_sq_only_for_image_samples_and_sq_template():
    record = {"id": "t", "conversations": [{"from": f, "value": v} for _ in range(4) for f, v in [("human", "q"), ("gpt", "a")]]}
    text_only = render_record(record, "v1_sq", has_image=False, sq_r=1.0)
    assert [r for r, _ in text_only.messages] == ["USER", "ASSISTANT"] * 4
    record["conversations"][0] = {"from": "human", "value": "<image>\nq"}
    with_image = render_record(record, "v1_sq", has_image=True, sq_r=1.0)
    assert [r for r, _ in with_image.messages] == ["USER", "ASSISTANT"] + ["VUSER", "ASSISTANT"] * 3
    v1 = render_record(record, "v1", has_image=True, sq_r=1.0)
    assert [r for r, _ in v1.messages] == ["USER", "ASSISTANT"] * 4
    # explicit vuser turns are kept whatever sq_r is
    record["conversations"][2]["from"] = "vuser"
    kept = render_record(record, "v1_sq", has_image=True, sq_r=0.0)
    assert [r for r, _ in kept.messages] == ["USER", "ASSISTANT", "VUSER", "ASSISTANT"] + ["USER", "ASSISTANT"] * 2


# ---------------------------------------------------------------------------------------------- (e) truncation
def _image_sample(tok, rounds=3):
    conversations = []
    for r in range(rounds):
        conversations += [{"from": "human", "value": f"question {r}"}, {"from": "gpt", "value": f"answer number {r}"}]
    conversations[0]["value"] = "<image>\n" + conversations[0]["value"]
    return preprocess_record({"id": "img", "conversations": conversations}, tok, "v1", has_image=True)


def test_truncation_counts_image_embeddings(llama_tokenizer):
    sample = _image_sample(llama_tokenizer)
    n, img = len(sample), 100
    assert sample.expanded_length(img) == n + img - 1
    assert truncate_sample(sample, n + img - 1, img) == sample
    cut = truncate_sample(sample, n + img - 6, img)
    assert cut.expanded_length(img) == n + img - 6 and cut.truncated == 5
    assert cut.input_ids == sample.input_ids[:-5] and cut.labels == sample.labels[:-5]
    assert cut.num_images == 1 and cut.num_trained > 0
    text_only = TokenizedSample([1, 5, 6, 7], [IGNORE_INDEX, IGNORE_INDEX, 6, 7])
    assert truncate_sample(text_only, 3, 576).input_ids == [1, 5, 6]


def test_truncation_errors(llama_tokenizer):
    sample = _image_sample(llama_tokenizer)
    image_pos = sample.input_ids.index(IMAGE_TOKEN_INDEX)
    with pytest.raises(BadRecordError) as err:
        truncate_sample(sample, image_pos + 50, 100, record_id="img")
    assert err.value.kind == "too_long" and "img" in str(err.value)
    first_trained = next(i for i, lab in enumerate(sample.labels) if lab != IGNORE_INDEX)
    with pytest.raises(BadRecordError) as err:
        truncate_sample(sample, first_trained + 99, 100, record_id="img")
    assert err.value.kind == "no_trained_tokens"
    assert truncate_sample(sample, first_trained + 100, 100).num_trained == 1
    with pytest.raises(BadRecordError) as err:
        truncate_sample(TokenizedSample([1, 2], [IGNORE_INDEX] * 2), 10, 576)
    assert err.value.kind == "no_trained_tokens"


# ---------------------------------------------------------------------------------------------- (f) bad records
def _rec(*turns, rid="bad-1"):
    return {"id": rid, "conversations": [{"from": f, "value": v} for f, v in turns]}


@pytest.mark.parametrize(
    "record, has_image, kind",
    [
        (_rec(("human", "q"), ("gpt", "a")), True, "missing_image_marker"),
        (_rec(("human", "<image> q <image>"), ("gpt", "a")), True, "extra_image_marker"),
        (_rec(("human", "<image> q"), ("gpt", "a"), ("human", "<image>"), ("gpt", "b")), True, "extra_image_marker"),
        (_rec(("human", "<image>\nq"), ("gpt", "a")), False, "extra_image_marker"),
        (_rec(("human", "q"), ("gpt", "a"), ("human", "<image>"), ("gpt", "b")), True, "misplaced_image_marker"),
        (_rec(("gpt", "a"), ("human", "q")), False, "role_order"),
        (_rec(("human", "q"), ("human", "q2"), ("gpt", "a")), False, "role_order"),
        (_rec(("human", "q"), ("gpt", "a"), ("human", "q2")), False, "role_order"),
        (_rec(("human", "q"), ("vuser", "a")), False, "role_order"),
        (_rec(("human", "q"), ("gpt", "  \n")), False, "empty_turn"),
        (_rec(("human", "q"), ("gpt", None)), False, "non_string"),
        (_rec(("human", "q"), ("gpt", ["a"])), False, "non_string"),
        (_rec(("robot", "q"), ("gpt", "a")), False, "malformed"),
        ({"id": "bad-1", "conversations": []}, False, "malformed"),
        ({"id": "bad-1"}, False, "malformed"),
        ({"id": "bad-1", "conversations": ["q", "a"]}, False, "malformed"),
    ],
)
def test_bad_records(record, has_image, kind):
    with pytest.raises(BadRecordError) as err:
        normalize_conversations(record, has_image=has_image, index=17)
    assert err.value.kind == kind
    assert err.value.record_id == "bad-1"
    assert "bad-1" in str(err.value) and "17" in str(err.value) and kind in str(err.value)
    clone = pickle.loads(pickle.dumps(err.value))
    assert (clone.kind, clone.record_id, clone.index, str(clone)) == (kind, "bad-1", 17, str(err.value))


def test_template_mismatch_is_a_bad_record(llama_tokenizer):
    vuser = _rec(("human", "q"), ("gpt", "a"), ("vuser", "q2"), ("gpt", "a2"))
    with pytest.raises(BadRecordError) as err:
        preprocess_record(vuser, llama_tokenizer, "v1", has_image=False, index=3)
    assert err.value.kind == "template_mismatch" and "bad-1" in str(err.value)
    with pytest.raises(BadRecordError) as err:
        preprocess_record(_rec(("human", "q"), ("gpt", "a")), llama_tokenizer, "plain", has_image=False)
    assert err.value.kind == "template_mismatch"


def test_image_marker_normalisation():
    record = _rec(("human", "  What is this? <image>  "), ("gpt", " it is a cat "))
    assert normalize_conversations(record, has_image=True) == [("user", "<image>\nWhat is this?"),
                                                              ("assistant", " it is a cat ")]
    assert normalize_conversations(_rec(("human", "<image>"), ("gpt", "x")), has_image=True)[0][1] == "<image>"
    aliases = _rec(("user", "q"), ("assistant", "a"), ("VUSER", "q2"), ("GPT", "a2"))
    assert [k for k, _ in normalize_conversations(aliases, has_image=False)] == ["user", "assistant", "vuser", "assistant"]


def test_mm_use_im_start_end():
    conv = build_conversation([("user", "<image>\nq"), ("assistant", "a")], "v1", mm_use_im_start_end=True)
    assert "<im_start><image><im_end>\nq" in conv.get_prompt()
