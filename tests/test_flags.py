"""The one set of model, decoding and self-questioning flags: every program parses the same names, and what differs
between programs is only the defaults it passes in."""

from __future__ import annotations

import argparse

import pytest

from llava.eval import (
    model_cap,
    model_vqa,
    model_vqa_loader,
    model_vqa_mmbench,
    model_vqa_science,
    run_llava,
    visual_sq,
)
from llava.inference import flags
from llava.inference.engine import GenerationSettings
from llava.serve import cli, gradio_web_server

EVAL = {"--question-file": "q.jsonl", "--answers-file": "a.jsonl", "--model-path": "m"}
PROGRAMS = {
    model_vqa_loader: EVAL, model_vqa: EVAL, model_vqa_science: EVAL, model_vqa_mmbench: EVAL, model_cap: EVAL,
    visual_sq: {"--answers-file": "a.jsonl", "--model-path": "m", "--image-folder": "."},
    run_llava: {"--image-file": "x.png", "--query": "q", "--model-path": "m"},
    cli: {}, gradio_web_server: {},
}
SHARED = ["--model-base", "b", "--lora_pretrain", "v", "--conv-mode", "v1", "--image-aspect-ratio", "pad",
          "--device", "cpu", "--dtype", "fp32", "--load-4bit", "--temperature", "0.5", "--top_p", "0.9",
          "--top-k", "7", "--num_beams", "2", "--max-new-tokens", "9", "--repetition-penalty", "1.1", "--seed", "3"]
SQ_SHARED = ["--sq-description-max-new-tokens", "11", "--description_max_new_tokens", "12", "--sq_conv_mode", "v1_sq"]
WITHOUT_SQ = (model_vqa, model_vqa_mmbench)  # LLaVA-Bench / MM-Vet and MMBench answer without self-questioning


def parse(module, *extra: str) -> argparse.Namespace:
    base = [x for kv in PROGRAMS[module].items() for x in kv]
    return module.build_parser().parse_args([*base, *extra])


@pytest.mark.parametrize("module", list(PROGRAMS), ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_every_program_parses_the_same_flags(module):
    args = parse(module, *SHARED, *([] if module in WITHOUT_SQ else SQ_SHARED))
    assert (args.model_base, args.lora_pretrain, args.conv_mode, args.image_aspect_ratio) == ("b", "v", "v1", "pad")
    assert (args.device, args.dtype, args.load_4bit, args.load_8bit) == ("cpu", "fp32", True, False)
    settings = flags.decoding_from_args(args)
    assert settings == GenerationSettings(temperature=0.5, top_p=0.9, top_k=7, num_beams=2, max_new_tokens=9,
                                          repetition_penalty=1.1, seed=3)
    if module not in WITHOUT_SQ:
        assert args.sq_description_max_new_tokens == 12 and args.sq_conv_mode == "v1_sq"


@pytest.mark.parametrize("module", list(PROGRAMS), ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_4bit_and_8bit_exclude_each_other(module, capsys):
    with pytest.raises(SystemExit):
        parse(module, "--load-4bit", "--load-8bit")
    assert "not allowed with argument" in capsys.readouterr().err


def test_defaults_differ_by_program_only_as_declared():
    bench, chat, demo = parse(model_vqa_loader), parse(cli), parse(gradio_web_server)
    assert (bench.temperature, bench.seed, bench.max_new_tokens) == (0.0, 0, 128)
    assert (chat.temperature, chat.seed, chat.max_new_tokens, chat.model_path) == (0.2, None, 512, None)
    assert (demo.temperature, demo.top_p) == (0.2, 0.7)
    with pytest.raises(SystemExit):  # benchmarks name their checkpoint; the chat falls back to the quickstart's
        model_vqa_loader.build_parser().parse_args(["--question-file", "q", "--answers-file", "a"])


def test_self_questioning_settings_per_program():
    assert flags.sq_from_args(parse(model_vqa_loader), GenerationSettings()) is None  # no --sq: plain answers
    assert flags.sq_from_args(parse(model_vqa), GenerationSettings()) is None  # no SQ flags at all
    loader = flags.sq_from_args(parse(model_vqa_loader, "--sq"), GenerationSettings(max_new_tokens=5))
    assert (loader.n_shot, loader.questions.temperature, loader.questions.top_p, loader.questions.top_k) == (3, 1.0,
                                                                                                          0.65, 50)
    assert loader.description.max_new_tokens == 1024 and loader.answers.max_new_tokens == 5
    cap = flags.sq_from_args(parse(model_cap, "--sq"), GenerationSettings())
    assert (cap.n_shot, cap.questions.temperature, cap.questions.top_k, cap.questions.max_new_tokens) == (5, 1.2, 300,
                                                                                                          300)
    # the chat: the reference loader's question sampling (docs/reference.md#d24-demo-question-sampling), a greedy
    # description, the chat's seed
    chat = flags.sq_from_args(parse(cli, "--seed", "4"), GenerationSettings())
    assert chat.questions == GenerationSettings(temperature=1.0, top_p=0.65, top_k=50, max_new_tokens=100, seed=4)
    assert not chat.description.do_sample and chat == flags.sq_from_defaults(flags.DEMO_QUESTIONS, seed=4)
    # visual_sq: its decoding flags sample the questions, the description stays greedy
    vsq = flags.sq_from_args(parse(visual_sq), GenerationSettings())
    assert (vsq.questions.temperature, vsq.questions.top_p, vsq.questions.top_k) == (1.2, 0.95, 300)
    assert not vsq.description.do_sample


def test_missing_model_paths_are_named(tmp_path, monkeypatch):
    with pytest.raises(flags.MissingModelError, match="does not exist"):
        flags.resolve_model_path(tmp_path / "nowhere")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(flags, "REPO_ROOT", tmp_path)
    with pytest.raises(flags.MissingModelError, match="scripts/quickstart.sh"):
        flags.resolve_model_path(None)
    (tmp_path / flags.QUICKSTART_CHECKPOINT).mkdir(parents=True)
    (tmp_path / flags.QUICKSTART_CHECKPOINT / "config.json").write_text("{}")
    assert flags.resolve_model_path(None) == str(tmp_path / flags.QUICKSTART_CHECKPOINT)
