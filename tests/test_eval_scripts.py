"""The bash eval scripts end to end on a tiny model: 2-way sharding + merge + scorer, and the caption sweep table."""

from __future__ import annotations

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
