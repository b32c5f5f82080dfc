"""The bash eval scripts end to end on a tiny model: 2-way sharding + merge + scorer, and the caption sweep table;
with a stand-in interpreter: failed shards stop the script loudly, EXTRA_ARGS / trailing arguments reach every
answering entry point."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from transformers import AutoTokenizer, CLIPImageProcessor

from llava.model.builder import save_pretrained_llava

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _write_model(path: Path, tiny_model_factory, tiny_foundation) -> Path:
    model = tiny_model_factory("mlp2x_gelu", seed=11)
    save_pretrained_llava(model, path, AutoTokenizer.from_pretrained(tiny_foundation["lm"]),
                          CLIPImageProcessor.from_pretrained(tiny_foundation["tower"]))
    return path


def _env(eval_dir: Path, model: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, EVAL_DIR=str(eval_dir), MODEL_PATH=str(model), CKPT="tiny", CHUNKS="2",
               BATCH_SIZE="2", PYTHON=sys.executable, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    env.update(extra)
    return env


def _images(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.new("RGB", (40, 30), (30 * i, 100, 200 - 20 * i)).save(folder / name)


def test_pope_script_shards_merges_and_scores(tmp_path, tiny_model_factory, tiny_foundation):
    model = _write_model(tmp_path / "model", tiny_model_factory, tiny_foundation)
    pope = tmp_path / "eval" / "pope"
    _images(pope / "val2014", [f"img{i}.png" for i in range(3)])
    questions, labels = [], {s: [] for s in ("random", "popular", "adversarial")}
    qid = 0
    for split in labels:
        for i in range(3):
            questions.append({"question_id": qid, "image": f"img{i}.png", "category": split,
                              "text": "Is there a dog in the image?"})
            labels[split].append({"question_id": qid, "label": "yes" if i % 2 else "no"})
            qid += 1
    (pope / "llava_pope_test.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    (pope / "coco").mkdir()
    for split, rows in labels.items():
        (pope / "coco" / f"coco_pope_{split}.json").write_text("".join(json.dumps(r) + "\n" for r in rows))

    done = subprocess.run(["bash", "scripts/eval/pope.sh"], cwd=ROOT, env=_env(tmp_path / "eval", model),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    answers = pope / "answers" / "tiny"
    merged = [json.loads(line) for line in (answers / "merge.jsonl").read_text().splitlines()]
    assert sorted(r["question_id"] for r in merged) == list(range(9))
    assert (answers / "2_0.jsonl").is_file() and (answers / "2_1.jsonl").is_file()
    for idx in (0, 1):  # per-shard logs, named on the console
        assert f"shard {idx} (cpu): {answers}/logs/shard_{idx}.log" in done.stdout
        assert "llava.eval.model_vqa_loader" in (answers / "logs" / f"shard_{idx}.log").read_text()
    result = json.loads((answers / "result.json").read_text())
    assert {"random", "popular", "adversarial"} <= set(result) and 0.0 <= result["mean_f1"] <= 1.0


def test_caption_sweep_writes_one_table(tmp_path, tiny_model_factory, tiny_foundation):
    model = _write_model(tmp_path / "model", tiny_model_factory, tiny_foundation)
    caption = tmp_path / "eval" / "caption" / "coco_karpathy_test"
    _images(caption / "images", [f"c{i}.png" for i in range(4)])
    (caption / "questions.jsonl").write_text("".join(
        json.dumps({"question_id": i, "image": f"c{i}.png", "text": "Provide a one-sentence caption."}) + "\n"
        for i in range(4)))
    (caption / "references.json").write_text(json.dumps(
        {str(i): [f"a picture number {i}", "a coloured rectangle", "an image"] for i in range(4)}))
    env = _env(tmp_path / "eval", model, SETS="coco_karpathy_test flickr30k_test", RESULTS_DIR=str(tmp_path / "res"))
    done = subprocess.run(["bash", "experiments.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    table = json.loads((tmp_path / "res" / "tiny_captions.json").read_text())
    rows = {r["set"]: r for r in table["rows"]}
    assert rows["coco_karpathy_test"]["images"] == 4 and "CIDEr" in rows["coco_karpathy_test"]
    assert rows["flickr30k_test"].get("missing") is True
    assert "skipping flickr30k_test" in done.stdout


# Stands in for `python` in the scripts: records each argv as a JSON line; an answering run (--answers-file) writes
# one fake answer, unless FAKE_SHARD_1 makes shard 1 crash (exit 3) or exit 0 without writing its file.
FAKE_PYTHON = """#!{python}
import json, os, sys
argv = sys.argv[1:]
with open(os.environ["FAKE_ARGV_LOG"], "a") as f:
    f.write(json.dumps(argv) + "\\n")
if "--answers-file" in argv:
    chunk = argv[argv.index("--chunk-idx") + 1]
    mode = os.environ.get("FAKE_SHARD_1", "") if chunk == "1" else ""
    print("loading the model ...")
    if mode == "crash":
        print("Traceback (most recent call last):", file=sys.stderr)
        print("RuntimeError: fake crash of shard 1", file=sys.stderr)
        sys.exit(3)
    if mode != "no-file":
        with open(argv[argv.index("--answers-file") + 1], "w") as f:
            f.write(json.dumps({{"question_id": int(chunk), "text": "yes"}}) + "\\n")
"""


@pytest.fixture
def fake_python(tmp_path):
    """(env running the scripts with the stand-in interpreter, a function giving the argv lists it was called with)."""
    script, calls = tmp_path / "fake_python", tmp_path / "argv.jsonl"
    script.write_text(FAKE_PYTHON.format(python=sys.executable))
    script.chmod(0o755)
    env = _env(tmp_path / "eval", tmp_path / "model", PYTHON=str(script), FAKE_ARGV_LOG=str(calls))
    env.pop("EXTRA_ARGS", None)

    def read_calls() -> list[list[str]]:
        return [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []

    return env, read_calls


def _run(script: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", f"scripts/eval/{script}", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("mode", ["crash", "no-file"])
def test_failed_shard_stops_the_script_without_merge_or_scoring(tmp_path, fake_python, mode):
    env, read_calls = fake_python
    answers = tmp_path / "eval" / "pope" / "answers" / "tiny"
    answers.mkdir(parents=True)
    (answers / "merge.jsonl").write_text('{"question_id": 0, "text": "stale"}\n')  # from an earlier run
    done = _run("pope.sh", dict(env, FAKE_SHARD_1=mode))
    assert done.returncode != 0, done.stdout + done.stderr
    log = answers / "logs" / "shard_1.log"
    if mode == "crash":
        assert f"shard 1 (cpu) exit code 3, log: {log}" in done.stderr
        assert "RuntimeError: fake crash of shard 1" in done.stderr  # the end of its log
        assert "RuntimeError: fake crash of shard 1" in log.read_text()
    else:
        assert f"shard 1 (cpu) exit code 0 but no answers file {answers}/2_1.jsonl" in done.stderr
        assert f"log: {log}" in done.stderr
    assert "shard 0 (cpu)" not in done.stderr  # only the failed shard is named
    assert f"shard 0 (cpu) done: 1 answers in {answers}/2_0.jsonl" in done.stdout
    assert not (answers / "merge.jsonl").exists()
    assert [argv[1] for argv in read_calls()] == ["llava.eval.model_vqa_loader"] * 2  # eval_pope never ran


def _answering_calls(calls: list[list[str]]) -> list[tuple[str, list[str], argparse.Namespace]]:
    """(module, argv, the module's real parser's reading of argv) of each answering run: the flags must exist."""
    out = []
    for argv in calls:
        if "--answers-file" in argv:
            assert argv[0] == "-m"
            out.append((argv[1], argv, importlib.import_module(argv[1]).build_parser().parse_args(argv[2:])))
    return out


def test_extra_args_and_trailing_args_reach_every_benchmark(fake_python):
    env, read_calls = fake_python
    every = "vqav2 gqa vizwiz sqa textvqa pope mme mmbench mmbench_cn seed llavabench mmvet qbench"
    env = dict(env, EXTRA_ARGS=" --dtype fp32   --max_new_tokens 7 ", CHUNKS="1", BENCHMARKS=every)
    done = subprocess.run(["bash", "scripts/eval/benchmarks.sh", "--temperature", "0.5", "--load-4bit"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "failed" not in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    calls = read_calls()
    answering = _answering_calls(calls)
    assert len(answering) == 13  # one shard for each benchmark script
    assert {m for m, _, _ in answering} == {f"llava.eval.{m}" for m in (
        "model_vqa_loader", "model_vqa", "model_vqa_science", "model_vqa_mmbench", "model_vqa_qbench")}
    for module, argv, args in answering:  # last, EXTRA_ARGS then the trailing ones: the script's defaults lose
        assert argv[-7:] == ["--dtype", "fp32", "--max_new_tokens", "7", "--temperature", "0.5", "--load-4bit"]
        assert (args.dtype, args.max_new_tokens, args.temperature, args.load_4bit) == ("fp32", 7, 0.5, True), module
    scorers = [argv for argv in calls if "--answers-file" not in argv]
    assert scorers and not any("--dtype" in argv or "--load-4bit" in argv for argv in scorers)
    assert "1 shard (cpu), log: " in done.stdout


def test_captioning_sq_switch_with_extra_args(tmp_path, fake_python):
    env, read_calls = fake_python
    done = _run("captioning.sh", dict(env, SET="coco_karpathy_test", SQ="1", EXTRA_ARGS="--n_shot 2"), "--seed", "3")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    answering = _answering_calls(read_calls())
    assert [m for m, _, _ in answering] == ["llava.eval.model_cap"] * 2
    for _, _, args in answering:  # SQ=1 still adds --sq --n_shot 5; EXTRA_ARGS comes later and wins
        assert (args.sq, args.n_shot, args.seed) == (True, 2, 3)
    merged = tmp_path / "eval" / "caption" / "coco_karpathy_test" / "answers" / "tiny" / "merge.jsonl"
    assert [json.loads(line)["question_id"] for line in merged.read_text().splitlines()] == [0, 1]


def test_real_entry_point_rejects_a_bad_extra_flag(tmp_path):
    """The real interpreter with one shard: its output is on the console and in its log, and argparse's exit 2
    fails the script before any merge or scoring."""
    env = _env(tmp_path / "eval", tmp_path / "model", CHUNKS="1", EXTRA_ARGS="--dtype float16")
    done = _run("pope.sh", env)
    answers = tmp_path / "eval" / "pope" / "answers" / "tiny"
    log = answers / "logs" / "shard_0.log"
    assert done.returncode != 0
    assert "invalid choice: 'float16'" in done.stdout and "invalid choice: 'float16'" in log.read_text()
    assert f"shard 0 (cpu) exit code 2, log: {log}" in done.stderr
    assert not (answers / "merge.jsonl").exists() and not (answers / "result.json").exists()
