"""--protocol {ours,paper}: per entry point the paper protocol resolves to the reference's batch size, preprocessing,
template, decoding and --sq context; explicit flags win; answers' meta.json records the protocol (and a rerun with
another protocol is refused); the 20-word caption cut; PROTOCOL=paper in the eval scripts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import write_tiny_checkpoint
from PIL import Image
from test_eval_scripts import ROOT, _answering_calls, _run, fake_python  # noqa: F401 (fake_python: a fixture)
from transformers import CLIPImageProcessor

from llava.eval import (
    cli_common,
    model_cap,
    model_vqa,
    model_vqa_loader,
    model_vqa_mmbench,
    model_vqa_qbench,
    model_vqa_science,
    protocol,
)
from llava.eval.answer_file import AnswerFileError
from llava.eval.eval_caption import join_captions
from llava.inference import flags
from llava.inference.engine import GenerationSettings, InferenceEngine
from llava.inference.self_questioning import SQContext, _image_turn, context_conversation
from llava.mm_utils import process_images

BASE = ["--model-path", "m", "--question-file", "q.jsonl", "--answers-file", "a.jsonl"]
# entry point -> (module, image_aspect_ratio, template, max_new_tokens) under --protocol paper
# (docs/reference.md#the-paper-protocol, from the reference's sqllava/eval/*.py: the loader and MMBench read config.json (pad), the others centre-crop)
PAPER = {
    "model_vqa_loader": (model_vqa_loader, None, "v1", 128),
    "model_vqa": (model_vqa, "square", "v1", 1024),
    "model_vqa_science": (model_vqa_science, "square", "v1", 1024),
    "model_cap": (model_cap, "square", "v1", 1024),
    "model_vqa_mmbench": (model_vqa_mmbench, None, "v1", 1024),
    "model_vqa_qbench": (model_vqa_qbench, "square", "llava_v1", 1024),
}
GREEDY = {"temperature": 0.0, "top_p": None, "top_k": None, "num_beams": 1, "repetition_penalty": None}


def parse(module, *extra: str):
    return cli_common.parse_args(module.build_parser(), [*BASE, *extra])


@pytest.mark.parametrize("name", list(PAPER))
def test_paper_protocol_resolves_per_entry_point(name):
    module, aspect, template, length = PAPER[name]
    args = parse(module, "--protocol", "paper")
    assert (args.batch_size, args.image_aspect_ratio, args.conv_mode) == (1, aspect, template)
    assert flags.decoding_from_args(args) == GenerationSettings(**GREEDY, max_new_tokens=length, seed=0)
    assert args.protocol_flags_kept == {} and args.protocol_applied["batch_size"] == 1
    # ours: today's flags, untouched (Q-Bench keeps its llava_v1 default)
    ours, raw = parse(module), module.build_parser().parse_args(BASE)
    assert (ours.batch_size, ours.image_aspect_ratio, ours.max_new_tokens) == (8, None, raw.max_new_tokens)
    assert ours.conv_mode == ("llava_v1" if name == "model_vqa_qbench" else None)
    assert flags.decoding_from_args(ours) == flags.decoding_from_args(raw)


def test_explicit_flags_beat_the_protocol(capsys):
    args = parse(model_vqa_loader, "--protocol", "paper", "--batch-size", "4", "--conv-mode", "v1_sq",
                 "--image-aspect-ratio", "square", "--max-new-tokens", "7", "--top_p", "0.9")
    assert (args.batch_size, args.conv_mode, args.image_aspect_ratio, args.max_new_tokens) == (4, "v1_sq", "square", 7)
    assert args.top_p == 0.9 and args.temperature == 0.0 and args.num_beams == 1  # the rest still pinned
    assert args.protocol_flags_kept == {"batch_size": 4, "conv_mode": "v1_sq", "image_aspect_ratio": "square",
                                        "max_new_tokens": 7, "top_p": 0.9}
    assert "given flags kept" in capsys.readouterr().err
    # a flag given with the protocol's own value is kept too (the eval scripts always pass --temperature 0)
    assert parse(model_cap, "--protocol", "paper", "--temperature", "0").protocol_flags_kept == {"temperature": 0.0}
    # ...and the self-answers follow a given --max_new_tokens (paper: 1024 for science and captions)
    sq = flags.sq_from_args(*_with_settings(parse(model_cap, "--protocol", "paper", "--sq", "--max_new_tokens", "9")))
    assert sq.answers.max_new_tokens == 9
    assert "--protocol" in model_cap.build_parser().format_help() and "win over the protocol" in " ".join(
        model_cap.build_parser().format_help().split())


def _with_settings(args):
    return args, flags.decoding_from_args(args)


def test_paper_self_questioning_settings():
    loader = flags.sq_from_args(*_with_settings(parse(model_vqa_loader, "--protocol", "paper", "--sq")))
    assert (loader.qa_role, loader.layout, loader.n_shot) == ("user", "description", 3)
    assert loader.questions == GenerationSettings(temperature=1.0, top_p=0.65, top_k=50, max_new_tokens=100, seed=0)
    assert loader.description.max_new_tokens == 128 and loader.answers.max_new_tokens == 128  # the CLI's length
    science_args = parse(model_vqa_science, "--protocol", "paper", "--sq", "--single-pred-prompt")
    science = flags.sq_from_args(*_with_settings(science_args))
    assert science_args.max_new_tokens == 64  # the reference's final answer under --sq (1024 without)
    assert (science.description.max_new_tokens, science.answers.max_new_tokens) == (1024, 1024)
    assert science.describe_prompt.endswith("\n" + model_vqa_science.SINGLE_PRED_PROMPT)
    assert protocol.SINGLE_PRED_PROMPT == model_vqa_science.SINGLE_PRED_PROMPT
    cap = flags.sq_from_args(*_with_settings(parse(model_cap, "--protocol", "paper", "--sq")))
    assert (cap.qa_role, cap.layout, cap.n_shot, cap.answers.max_new_tokens) == ("user", "image", 5, 1024)
    assert cap.questions == GenerationSettings(temperature=1.2, top_p=0.95, top_k=300, max_new_tokens=300, seed=0)
    ours = flags.sq_from_args(*_with_settings(parse(model_cap, "--sq")))
    assert (ours.qa_role, ours.layout) == ("vuser", "description")
    assert "qa_role" not in ours.as_dict() and cap.as_dict()["qa_role"] == "user"  # old fingerprints still match


class _StubEngine:
    """What prompt building needs of an engine."""

    def image_placeholder(self) -> str:
        return "<image>"

    def with_images(self, question: str, n_images: int = 1) -> str:
        return InferenceEngine.with_images(self, question, n_images)


def test_paper_context_prompts():
    engine, ctx = _StubEngine(), SQContext("a red square", [("What colour is it?", "Red.")])
    ours = context_conversation(engine, ctx, "Caption it.").get_prompt()
    assert "</s>VUSER: What colour is it?</s> ASSISTANT: Red.</s>USER: Caption it. ASSISTANT:" in ours
    paper = context_conversation(engine, ctx, "Caption it.", qa_role="user").get_prompt()
    assert "ASSISTANT: a red square</s>USER: What colour is it? ASSISTANT: Red.</s>USER: Caption it. ASSISTANT:" in paper
    assert "VUSER:" not in paper
    image_layout = context_conversation(engine, ctx, "Caption it.", qa_role="user", describe_prompt="").get_prompt()
    assert "USER: <image>\n ASSISTANT: a red square</s>USER: What colour" in image_layout
    cap_sq = flags.sq_from_args(*_with_settings(parse(model_cap, "--protocol", "paper", "--sq")))
    ask = _image_turn(engine, cap_sq).get_prompt()  # model_cap's question prompt: only the image, not cut
    assert ask.endswith(" VUSER: <image>\n ") and "ASSISTANT" not in ask
    assert _image_turn(engine, cap_sq, "Why?").get_prompt() == ask + "Why?</s> ASSISTANT:"


def test_centre_crop_changes_the_pixels_of_a_non_square_image(tiny_foundation):
    processor = CLIPImageProcessor.from_pretrained(tiny_foundation["tower"])
    wide = Image.new("RGB", (60, 20), (0, 0, 255))
    wide.paste((255, 0, 0), (0, 0, 10, 20))  # a red strip on the left: cropped away, kept by padding
    cap, loader = parse(model_cap, "--protocol", "paper"), parse(model_vqa_loader, "--protocol", "paper")
    crop = process_images([wide], processor, cap.image_aspect_ratio)
    pad = process_images([wide], processor, "pad")  # the loader's "as trained" on an SQ-LLaVA (pad) checkpoint
    assert loader.image_aspect_ratio is None and crop.shape == pad.shape
    assert not torch.allclose(crop, pad)
    assert crop[0].flatten(1).std(dim=1).max() < 1e-2  # the crop keeps the blue centre only: the strip is gone
    assert pad[0].flatten(1).std(dim=1).max() > 0.1  # the padded image keeps the strip (and the padding)
    square = Image.new("RGB", (30, 30), (10, 200, 30))
    assert torch.allclose(process_images([square], processor, "square"), process_images([square], processor, "pad"))


def test_caption_predictions_cut_to_20_words_in_paper_scoring():
    long = " ".join(f"w{i}" for i in range(30))
    rows, refs = [{"question_id": 1, "text": long}], {"1": ["a reference"]}
    whole, _, _ = join_captions(rows, refs)
    cut, _, _ = join_captions(rows, refs, max_words=protocol.PAPER_CAPTION_MAX_WORDS)
    assert whole["1"] == long and cut["1"] == " ".join(f"w{i}" for i in range(20))


# ---------------------------------------------------------------------- real runs on a tiny checkpoint
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_foundation):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("protocol_ckpt") / "tiny-llava", tiny_foundation, seed=2,
                                 image_aspect_ratio="pad")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("protocol_data")
    for i, size in enumerate([(40, 24), (24, 40)]):
        Image.new("RGB", size, (60 * i, 120, 200)).save(root / f"{i}.png")
    (root / "q.jsonl").write_text("".join(json.dumps({"question_id": i, "image": f"{i}.png", "text": "What is it?"})
                                          + "\n" for i in range(2)))
    return root


def _run_args(checkpoint: Path, data: Path, answers: Path, *extra: str) -> list[str]:
    return ["--model-path", str(checkpoint), "--image-folder", str(data), "--question-file", str(data / "q.jsonl"),
            "--answers-file", str(answers), "--max_new_tokens", "3", "--no-progress", "--num-workers", "1", *extra]


def test_paper_runs_record_the_protocol(checkpoint, data, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        loader = tmp_path / "loader.jsonl"
        model_vqa_loader.main(_run_args(checkpoint, data, loader, "--protocol", "paper", "--limit", "1"))
        # resuming these answers with the other protocol is refused, as any other change of settings
        with pytest.raises(AnswerFileError, match="other settings.*protocol"):
            model_vqa_loader.main(_run_args(checkpoint, data, loader, "--protocol", "ours", "--conv-mode", "v1"))
        model_vqa_loader.main(_run_args(checkpoint, data, loader, "--protocol", "paper"))  # resumed
        meta = json.loads((tmp_path / "loader.jsonl.meta.json").read_text())
        fp, run = meta["fingerprint"], meta["runs"][-1]
        assert (fp["protocol"], fp["conv_mode"], fp["image_aspect_ratio"]) == ("paper", "v1", "pad")
        assert run["batch_size"] == 1 and run["protocol"]["name"] == "paper"
        assert run["protocol"]["flags_kept"] == {"max_new_tokens": 3}
        assert len(loader.read_text().splitlines()) == 2 and len(meta["runs"]) == 2
        # a complete file is not resumed, but it does not pass for the other protocol's answers either
        with pytest.raises(AnswerFileError, match="protocol paper, not ours"):
            model_vqa_loader.main(_run_args(checkpoint, data, loader, "--protocol", "ours", "--conv-mode", "v1"))

        cap = tmp_path / "cap.jsonl"  # --sq in the reference's model_cap layout, tiny lengths
        model_cap.main(_run_args(checkpoint, data, cap, "--protocol", "paper", "--sq", "--n_shot", "1",
                                 "--sq_max_new_tokens", "3", "--sq_description_max_new_tokens", "3"))
        meta = json.loads((tmp_path / "cap.jsonl.meta.json").read_text())
        fp = meta["fingerprint"]
        assert (fp["protocol"], fp["conv_mode"], fp["image_aspect_ratio"]) == ("paper", "v1", "square")
        assert fp["self_questioning"]["qa_role"] == "user" and fp["self_questioning"]["layout"] == "image"
        assert meta["runs"][-1]["batch_size"] == 1
        rows = [json.loads(line) for line in cap.read_text().splitlines()]
        assert len(rows) == 2 and all("self_questioning" in r["metadata"] for r in rows)
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------- the eval scripts
def test_protocol_paper_reaches_every_answering_run(fake_python):  # noqa: F811
    env, read_calls = fake_python
    every = "vqav2 gqa vizwiz sqa textvqa pope mme mmbench mmbench_cn seed llavabench mmvet qbench"
    env = dict(env, PROTOCOL="paper", BATCH_SIZE="16", CHUNKS="1", BENCHMARKS=every)
    done = subprocess.run(["bash", "scripts/eval/benchmarks.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "BATCH_SIZE=16 replaced by 1" in done.stderr
    answering = _answering_calls(read_calls())
    assert len(answering) == 13
    for module, argv, _ in answering:
        args = cli_common.parse_args(__import__(module, fromlist=["x"]).build_parser(), argv[2:])
        assert (args.protocol, args.batch_size) == ("paper", 1), module
        assert args.conv_mode == ("llava_v1" if module.endswith("qbench") else "v1"), module


def test_protocol_paper_cuts_captions_and_rejects_unknown_protocols(fake_python):  # noqa: F811
    env, read_calls = fake_python
    done = _run("captioning.sh", dict(env, SET="coco_karpathy_test", PROTOCOL="paper"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    calls = read_calls()
    assert all("--protocol" in argv and argv[argv.index("--batch-size") + 1] == "1" for _, argv, _ in
               _answering_calls(calls))
    scorer = [argv for argv in calls if argv[1] == "llava.eval.eval_caption"]
    assert scorer and scorer[0][-2:] == ["--max-words", str(protocol.PAPER_CAPTION_MAX_WORDS)]
    ours = _run("captioning.sh", dict(env, SET="coco_karpathy_test"))
    assert ours.returncode == 0 and "--max-words" not in read_calls()[-1]
    bad = _run("pope.sh", dict(env, PROTOCOL="reference"))
    assert bad.returncode == 1 and "PROTOCOL must be ours or paper" in bad.stderr
