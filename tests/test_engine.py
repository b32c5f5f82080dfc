"""The inference engine on a tiny saved checkpoint: batching, streaming, settings, self-questioning, answer files."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import write_tiny_checkpoint
from PIL import Image

from llava.eval.answer_file import AnswerFile, AnswerFileError
from llava.eval.cli_common import get_chunk, model_name_from_path
from llava.inference.engine import GenerationSettings, InferenceEngine, Request, default_conv_mode
from llava.inference.self_questioning import (
    SQContext,
    SQSettings,
    answer_with_self_questioning,
    ask_questions,
    context_conversation,
    tidy_question,
)

GREEDY = GenerationSettings(max_new_tokens=10)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_foundation):
    """A full checkpoint written by save_pretrained_llava (pad preprocessing), loaded through the real builder."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("engine_ckpt") / "tiny-llava", tiny_foundation, seed=0,
                                 image_aspect_ratio="pad")


@pytest.fixture(scope="module")
def engine(checkpoint) -> InferenceEngine:
    return InferenceEngine.from_pretrained(checkpoint, device="cpu")


def test_loading_announces_the_attention(checkpoint, capfd):
    """One stderr line names the kernel and why (on CPU: SDPA, since FlashAttention-2 needs a CUDA GPU)."""
    capfd.readouterr()
    engine = InferenceEngine.from_pretrained(checkpoint, device="cpu")
    err = capfd.readouterr().err
    assert "[llava] attention: sdpa (auto: FlashAttention-2 is not used because the device is cpu" in err
    assert engine.model.language_model.config._attn_implementation == "sdpa"


def _image(i: int) -> Image.Image:
    g = torch.Generator().manual_seed(i)
    pixels = (torch.rand(20 + 3 * i, 28 + 5 * (i % 4), 3, generator=g) * 255).to(torch.uint8).numpy()
    return Image.fromarray(pixels)


def _requests(engine: InferenceEngine, n: int = 10) -> list[Request]:
    out = []
    for i in range(n):
        question = "What is shown here?" + " Please look carefully at the colours." * i
        out.append(engine.request(question, None if i % 4 == 3 else _image(i), id=i))
    return out


def test_engine_defaults_come_from_the_checkpoint(engine):
    assert engine.image_aspect_ratio == "pad"  # as trained, not centre-cropped (docs/reference.md#d11-image-preprocessing-at-evaluation)
    assert engine.conv_mode == "v1"
    info = engine.info()
    assert info["num_image_tokens"] == engine.model.num_image_tokens == 4
    assert {"torch", "transformers", "python"} <= set(info["versions"])
    prompt = engine.build_conversation("Q?", image=True).get_prompt()
    assert prompt.endswith(" USER: <image>\nQ? ASSISTANT:")


def test_default_conv_mode_reads_config():
    class Cfg:
        model_type = "llama"

    assert default_conv_mode(Cfg()) == "v1"
    Cfg.version = "v1_sq"
    assert default_conv_mode(Cfg()) == "v1_sq"
    Cfg.version = "not-a-template"
    assert default_conv_mode(Cfg()) == "v1"


def test_batched_greedy_equals_unbatched(engine):
    requests = _requests(engine)
    singles = engine.generate(requests, GREEDY, batch_size=1)
    batched = engine.generate(requests, GREEDY, batch_size=8)
    assert batched == singles
    assert len(set(singles)) > 1  # the prompts really differ
    assert engine.generate(requests[::-1], GREEDY, batch_size=4) == singles[::-1]


def test_stream_joins_to_generate(engine):
    request = _requests(engine, 2)[1]
    pieces = list(engine.stream(request, GREEDY))
    assert len(pieces) > 1
    assert "".join(pieces).strip() == engine.generate([request], GREEDY, batch_size=1)[0]


def test_greedy_ignores_the_lm_generation_config(engine):
    request = _requests(engine, 1)[0]
    before = engine.generate([request], GREEDY)
    gen_config = engine.model.language_model.generation_config
    saved = gen_config.to_dict()
    try:
        gen_config.do_sample, gen_config.temperature, gen_config.top_p = True, 0.9, 0.6  # vicuna's file
        assert engine.generate([request], GREEDY) == before
    finally:
        for key in ("do_sample", "temperature", "top_p"):
            setattr(gen_config, key, saved.get(key))


def test_seeded_sampling_is_reproducible(engine):
    requests = _requests(engine, 3)
    settings = GenerationSettings(temperature=1.0, top_k=50, top_p=0.9, max_new_tokens=6, seed=7)
    assert engine.generate(requests, settings) == engine.generate(requests, settings)
    assert settings.do_sample and not GREEDY.do_sample


def test_image_count_must_match(engine):
    with pytest.raises(ValueError, match="image placeholder"):
        engine.generate([Request(engine.build_conversation("Q?", image=True), None)], GREEDY)


def test_stop_string_is_cut(engine):
    conv = engine.build_conversation("Q?", image=False)
    assert engine.postprocess(" yes</s>USER: more", conv) == "yes"
    assert engine.postprocess("  no  ", conv) == "no"


def test_self_questioning_uses_the_training_format(engine):
    ctx = SQContext("A red square.", [("What colour?", "Red.")])
    prompt = context_conversation(engine, ctx, "Is it round?").get_prompt()
    assert prompt.endswith(
        "USER: <image>\nCan you describe the image in detail? ASSISTANT: A red square.</s>"
        "VUSER: What colour?</s> ASSISTANT: Red.</s>USER: Is it round? ASSISTANT:"
    )
    cue = context_conversation(engine, SQContext("A red square."), vuser_cue=True).get_prompt()
    assert cue.endswith("ASSISTANT: A red square.</s>VUSER:")


def test_ask_questions_and_answer(engine):
    sq = SQSettings(n_shot=2, questions=GenerationSettings(temperature=1.0, top_k=50, max_new_tokens=5, seed=1),
                    answers=GenerationSettings(max_new_tokens=4), description=GenerationSettings(max_new_tokens=4))
    questions = ask_questions(engine, _image(1), 3, sq.questions, sq=sq)
    assert len(questions) <= 3 and all(q.text.endswith("?") and q.prompt.startswith(q.text) for q in questions)
    results = answer_with_self_questioning(engine, [_image(1), None, _image(2)], ["Q1?", "Q2?", "Q3?"], sq,
                                           GenerationSettings(max_new_tokens=4), batch_size=4)
    assert [ctx is None for _, ctx in results] == [False, True, False]
    assert all(len(ctx.qa) == 2 for _, ctx in results if ctx is not None)


def test_chunks_are_contiguous_ceil_splits():
    items = list(range(10))
    assert [get_chunk(items, 3, k) for k in range(3)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert sum((get_chunk(items, 4, k) for k in range(4)), []) == items
    assert get_chunk([1], 3, 2) == []  # more chunks than questions: empty, not IndexError
    assert model_name_from_path("/x/run/checkpoint-100/") == "run_checkpoint-100"


def test_answer_file_repairs_and_refuses_mixed_settings(tmp_path):
    path = tmp_path / "a.jsonl"
    rows = [{"question_id": i, "text": str(i)} for i in range(3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"question_id": 3, "te')
    writer = AnswerFile(path)
    assert writer.done == {"0", "1", "2"} and writer.repaired_bytes > 0
    writer.start_run({"conv_mode": "v1"}, {})
    writer.write([{"question_id": 3, "text": "3"}])
    writer.close()
    assert [json.loads(line)["question_id"] for line in path.read_text().splitlines()] == [0, 1, 2, 3]
    with pytest.raises(AnswerFileError, match="conv_mode"):
        AnswerFile(path).start_run({"conv_mode": "v1_sq"}, {})
    path.write_text('{"question_id": 0}\nnot json\n{"question_id": 2}\n')
    with pytest.raises(AnswerFileError, match="line 2"):
        AnswerFile(path)


@pytest.mark.parametrize(("raw", "text", "prompt"), [
    ("What color is the circle?", "What color is the circle?", "What color is the circle?"),
    (" What color is the circle? Answer the question using a single word or phrase.", "What color is the circle?",
     "What color is the circle?\nAnswer the question using a single word or phrase."),
    ("Which one is red?\nAnswer with the option's letter from the given choices directly.", "Which one is red?",
     "Which one is red?\nAnswer with the option's letter from the given choices directly."),
    ("Is there a cube? ASSISTANT: yes", "Is there a cube?", "Is there a cube?"),
    ("<image>What is it?", "What is it?", "What is it?"),
    ("What shape is the largeVUSER: What color is the circle?", None, None),
    ("There is one object.", None, None),
    ("Answer the question using a single word or phrase.", None, None),
    ("", None, None),
])
def test_tidy_question(raw, text, prompt):
    tidy = tidy_question(raw)
    assert (tidy.text, tidy.prompt) == (text, prompt) if text else tidy is None


def test_ask_questions_samples_more_rounds_until_k_distinct(engine, monkeypatch):
    from llava.inference import self_questioning

    rounds = iter([["What is it?", "junk", "What is it? Answer the question using a single word or phrase."],
                   ["Is there a cube?", "What is it?", "How many objects are there?"],
                   ["Never reached?"] * 3])
    seeds = []

    def fake(engine, images, descriptions, k, settings, *a, **kw):
        seeds.append(settings.seed)
        return [next(rounds)]

    monkeypatch.setattr(self_questioning, "sample_questions", fake)
    settings = GenerationSettings(temperature=1.0, seed=5)
    got = ask_questions(engine, _image(1), 3, settings, description="A red square.")
    assert [q.text for q in got] == ["What is it?", "Is there a cube?", "How many objects are there?"]
    assert seeds == [5, 6]  # a new seed per round, so a seeded round is not drawn twice
    rounds = iter([["junk"]] * 5)
    assert ask_questions(engine, _image(1), 2, settings, description="A red square.") == []  # at most 3 rounds


def test_ask_questions_seeds_each_image_by_its_content(engine, monkeypatch):
    """A fixed seed must give each image its own reproducible draws, not the same draws for every image."""
    from llava.inference import self_questioning

    seen = []

    def fake(engine, images, descriptions, k, settings, batch_size, ids, **kw):
        seen.append(ids[0])
        return [["What is it?"]]

    monkeypatch.setattr(self_questioning, "sample_questions", fake)
    settings = GenerationSettings(temperature=1.0, seed=5)
    for n in (1, 2, 1):
        ask_questions(engine, _image(n), 1, settings, description="A red square.")
    assert seen[0] == seen[2] != seen[1]
