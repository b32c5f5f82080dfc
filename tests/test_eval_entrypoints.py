"""`python -m llava.eval.<module>` entry points on a tiny saved checkpoint: formats, errors, chunks, resume, SQ."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import write_tiny_checkpoint
from PIL import Image

from llava.eval import (
    model_cap,
    model_vqa,
    model_vqa_loader,
    model_vqa_mmbench,
    model_vqa_qbench,
    model_vqa_science,
    run_llava,
    visual_sq,
)

REPO = Path(__file__).resolve().parents[1]
FAST = ["--max_new_tokens", "6", "--no-progress"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_foundation):
    """A full checkpoint written by save_pretrained_llava, read back by the entry points' real loader."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("entry_ckpt") / "tiny-llava", tiny_foundation, seed=1,
                                 image_aspect_ratio="pad")


def _save_image(path: Path, i: int) -> None:
    g = torch.Generator().manual_seed(i)
    pixels = (torch.rand(24 + 4 * i, 30, 3, generator=g) * 255).to(torch.uint8).numpy()
    Image.fromarray(pixels).save(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Images (one unreadable, one missing) and question files in every input format."""
    root = tmp_path_factory.mktemp("eval_data")
    (root / "images").mkdir()
    for i in range(5):
        _save_image(root / "images" / f"{i}.png", i)
    (root / "images" / "broken.jpg").write_bytes(b"not a jpeg")
    image_of = {3: "missing.png", 7: "broken.jpg"}
    questions = [
        {"question_id": f"q{i}", "image": image_of.get(i, f"{i % 5}.png"),
         "text": "What is in the image?" + " Describe the colours." * i + "\nAnswer the question using a single word."}
        for i in range(10)
    ]
    (root / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    science = [
        {"id": "s0", "image": "0.png", "conversations": [{"from": "human", "value": "<image>\nWhich colour?\nA. red\nB. blue"}]},
        {"id": "s1", "conversations": [{"from": "human", "value": "Which is a mammal?\nA. cat\nB. fish"}]},
        {"id": "s2", "image": "1.png", "conversations": [{"from": "human", "value": "Is it dark?\nA. yes\nB. no"}]},
    ]
    (root / "science.json").write_text(json.dumps(science))
    captions = [{"question_id": i, "image": f"{i}.png", "image_id": 100 + i, "text": "Describe the image briefly."}
                for i in range(3)]
    (root / "captions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in captions))
    return root


def _args(checkpoint: Path, data: Path, question_file: str, answers: Path, *extra: str) -> list[str]:
    return ["--model-path", str(checkpoint), "--image-folder", str(data / "images"),
            "--question-file", str(data / question_file), "--answers-file", str(answers), *FAST, *extra]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_loader_rows_errors_batching_and_metadata(checkpoint, data, tmp_path):
    one, eight = tmp_path / "b1.jsonl", tmp_path / "b8.jsonl"
    model_vqa_loader.main(_args(checkpoint, data, "questions.jsonl", one, "--batch-size", "1"))
    model_vqa_loader.main(_args(checkpoint, data, "questions.jsonl", eight, "--batch-size", "8"))
    assert one.read_text() == eight.read_text()  # greedy answers do not depend on the batch size
    rows = _rows(eight)
    assert [r["question_id"] for r in rows] == [f"q{i}" for i in range(10)]  # nothing skipped (docs/reference.md#d4-missing-images-in-evaluation)
    assert list(rows[0]) == ["question_id", "prompt", "text", "answer_id", "model_id", "metadata"]
    assert rows[0]["prompt"].startswith("What is in the image?") and rows[0]["model_id"] == "tiny-llava"
    errors = {r["question_id"]: r["error"] for r in rows if "error" in r}
    assert set(errors) == {"q3", "q7"} and "missing" in errors["q3"] and "broken.jpg" in errors["q7"]
    assert all(r["text"] for r in rows if "error" not in r) and len({r["text"] for r in rows}) > 2

    meta = json.loads((tmp_path / "b8.jsonl.meta.json").read_text())
    assert meta["fingerprint"]["conv_mode"] == "v1" and meta["fingerprint"]["image_aspect_ratio"] == "pad"
    assert meta["fingerprint"]["decoding"]["max_new_tokens"] == 6
    run = meta["runs"][-1]
    assert run["engine"]["versions"]["transformers"] and run["answers_written"] == 10
    assert run["error_rows_written"] == 2 and meta["total_rows"] == 10


def test_chunks_merge_to_the_unsharded_run(checkpoint, data, tmp_path):
    full = tmp_path / "full.jsonl"
    model_vqa_loader.main(_args(checkpoint, data, "questions.jsonl", full))
    merged = ""
    for k in range(2):
        part = tmp_path / f"chunk{k}.jsonl"
        model_vqa_loader.main(_args(checkpoint, data, "questions.jsonl", part, "--num-chunks", "2", "--chunk-idx", str(k)))
        merged += part.read_text()
    assert merged == full.read_text()
    # more chunks than questions: the empty chunk still writes its (empty) file, so the eval scripts can merge
    empty = tmp_path / "chunk12.jsonl"
    model_vqa_loader.main(_args(checkpoint, data, "questions.jsonl", empty, "--num-chunks", "13", "--chunk-idx", "12"))
    assert empty.is_file() and empty.read_text() == ""


def test_interrupted_run_resumes_to_the_same_file(checkpoint, data, tmp_path):
    full = tmp_path / "full.jsonl"
    model_vqa_loader.main(_args(checkpoint, data, "questions.jsonl", full, "--batch-size", "4"))
    reference = full.read_text()

    killed = tmp_path / "killed.jsonl"  # died while writing line 5
    lines = reference.splitlines(keepends=True)
    killed.write_text("".join(lines[:4]) + lines[4][:17])
    model_vqa_loader.main(_args(checkpoint, data, "questions.jsonl", killed, "--batch-size", "4"))
    assert killed.read_text() == reference

    limited = tmp_path / "limited.jsonl"  # stopped after 3 questions, then restarted
    model_vqa_loader.main(_args(checkpoint, data, "questions.jsonl", limited, "--limit", "3"))
    assert len(_rows(limited)) == 3
    with pytest.raises(RuntimeError, match="other settings"):  # resuming with other decoding is refused
        model_vqa_loader.main(_args(checkpoint, data, "questions.jsonl", limited, "--num_beams", "2"))
    model_vqa_loader.main(_args(checkpoint, data, "questions.jsonl", limited))
    assert limited.read_text() == reference
    assert len(json.loads((tmp_path / "limited.jsonl.meta.json").read_text())["runs"]) == 2


def test_science_and_llava_bench_formats(checkpoint, data, tmp_path):
    answers = tmp_path / "sqa.jsonl"
    model_vqa_science.main(_args(checkpoint, data, "science.json", answers, "--single-pred-prompt"))
    rows = _rows(answers)
    assert [r["question_id"] for r in rows] == ["s0", "s1", "s2"]
    suffix = "\nAnswer with the option's letter from the given choices directly."
    assert rows[0]["prompt"] == "<image>\nWhich colour?\nA. red\nB. blue" + suffix
    assert rows[1]["prompt"] == "Which is a mammal?\nA. cat\nB. fish" + suffix  # text-only question
    assert all(r["text"] and "error" not in r for r in rows)

    bench = tmp_path / "bench.jsonl"
    model_vqa.main(_args(checkpoint, data, "captions.jsonl", bench))
    assert [r["question_id"] for r in _rows(bench)] == [0, 1, 2]


def test_mmbench_tsv_with_base64_images(checkpoint, data, tmp_path):
    buffer = io.BytesIO()
    Image.open(data / "images" / "1.png").save(buffer, format="PNG")
    image = base64.b64encode(buffer.getvalue()).decode()
    table = [
        {"index": "11", "question": "What colour?", "hint": "Look at the centre.", "A": "red", "B": "green",
         "C": "blue", "D": "", "answer": "A", "category": "c", "image": image},
        {"index": "12", "question": "How many?", "hint": "nan", "A": "one", "B": "two", "C": "", "D": "",
         "answer": "B", "category": "c", "image": "11"},  # v1.1 style: the image of row 11
        {"index": "13", "question": "Broken?", "hint": "", "A": "yes", "B": "no", "C": "", "D": "",
         "answer": "B", "category": "c", "image": "@@@not-base64"},
    ]
    tsv = tmp_path / "mmbench.tsv"
    with open(tsv, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]), delimiter="\t")
        writer.writeheader()
        writer.writerows(table)
    answers = tmp_path / "mmbench.jsonl"
    model_vqa_mmbench.main(["--model-path", str(checkpoint), "--question-file", str(tsv), "--answers-file",
                            str(answers), "--single-pred-prompt", "--all-rounds", *FAST])
    rows = _rows(answers)
    assert [(r["question_id"], r["round_id"]) for r in rows] == [(11, 0), (11, 1), (11, 2), (12, 0), (12, 1),
                                                                 (13, 0), (13, 1)]
    assert list(rows[0]) == ["question_id", "round_id", "prompt", "text", "options", "option_char", "answer_id",
                             "model_id", "metadata"]
    assert rows[0]["prompt"] == "Look at the centre.\nWhat colour?\nA. red\nB. green\nC. blue"
    assert rows[1]["options"] == ["green", "blue", "red"] and rows[1]["option_char"] == ["B", "C", "A"]
    assert rows[1]["prompt"].endswith("\nA. green\nB. blue\nC. red")
    assert rows[3]["prompt"] == "How many?\nA. one\nB. two" and "error" not in rows[3]
    assert all("error" in r for r in rows[5:]) and all("error" not in r for r in rows[:5])

    pd = pytest.importorskip("pandas")
    from llava.eval.convert import convert_mmbench

    frame, report = convert_mmbench(rows, pd.read_table(tsv))
    assert len(frame) == 3 and frame["prediction"].iloc[0] == rows[0]["text"]


def test_qbench_and_caption_rows(checkpoint, data, tmp_path):
    qbench = [{"id": "qb0", "img_path": "2.png", "question": "How is the quality?", "candidates": ["good", "bad"],
               "correct_ans": "good"}]
    (tmp_path / "qbench.json").write_text(json.dumps(qbench))
    answers = tmp_path / "qbench.jsonl"
    model_vqa_qbench.main(["--model-path", str(checkpoint), "--image-folder", str(data / "images"),
                           "--questions-file", str(tmp_path / "qbench.json"), "--answers-file", str(answers), *FAST])
    row = _rows(answers)[0]
    assert row["prompt"] == "How is the quality?\nChoose between one of the options as follows:\nA. good\nB. bad\n"
    assert row["metadata"]["correct_ans"] == "good" and row["question_id"] == "qb0"
    assert json.loads((tmp_path / "qbench.jsonl.meta.json").read_text())["fingerprint"]["conv_mode"] == "llava_v1"

    captions = tmp_path / "cap.jsonl"
    model_cap.main(_args(checkpoint, data, "captions.jsonl", captions))
    rows = _rows(captions)
    assert [r["metadata"]["image_id"] for r in rows] == [100, 101, 102]  # what the caption scorer joins on
    assert all(r["text"] for r in rows)


def test_run_llava_prints_what_model_generate_gives(checkpoint, data, capsys):
    from llava.conversation import get_template
    from llava.data.tokenization import tokenizer_image_token
    from llava.mm_utils import load_image, process_images
    from llava.model.builder import load_pretrained_model

    image = data / "images" / "4.png"
    answer = run_llava.main(["--model-path", str(checkpoint), "--image-file", str(image), "--query",
                             "What is it?", "--temperature", "0", "--max_new_tokens", "8"])
    printed = capsys.readouterr().out.strip()
    assert printed == answer

    tokenizer, model, processor, _ = load_pretrained_model(checkpoint)
    conv = get_template("v1")
    conv.append_message(conv.roles[0], "<image>\nWhat is it?")
    conv.append_message(conv.roles[1], None)
    ids = tokenizer_image_token(conv.get_prompt(), tokenizer, return_tensors="pt")[None]
    pixels = process_images([load_image(image)], processor, model.config.image_aspect_ratio)
    out = model.generate(ids, pixel_values=pixels, max_new_tokens=8, do_sample=False,
                         pad_token_id=tokenizer.unk_token_id)
    assert printed == tokenizer.decode(out[0], skip_special_tokens=True).strip()


def test_visual_sq_writes_questions_per_image(checkpoint, data, tmp_path):
    answers = tmp_path / "vsq.jsonl"
    visual_sq.main(["--model-path", str(checkpoint), "--image-folder", str(data / "images"), "--answers-file",
                    str(answers), "--n_shot", "3", "--start", "1", "--end", "5", "--max_new_tokens", "5",
                    "--description_max_new_tokens", "5", "--no-progress"])
    rows = [json.loads(line) for line in answers.read_text().splitlines()]  # valid JSONL, no trailing commas
    assert [r["image"] for r in rows] == ["1.png", "2.png", "3.png", "4.png"]  # sorted listing, sliced
    assert all(len(r["questions"]) == 3 and all(isinstance(q, str) and q for q in r["questions"]) for r in rows)
    assert (tmp_path / "vsq.jsonl.meta.json").is_file()


def test_visual_sq_judges_shapesworld_questions(checkpoint, tmp_path, capsys):
    from llava.shapesworld import make_questions, score_questions
    from llava.shapesworld.export import export, load_scenes

    world = tmp_path / "sw"
    export(world, seed=1, n_pretrain=1, n_instruct=1, n_eval=4)
    answers = tmp_path / "sq.jsonl"
    argv = ["--model-path", str(checkpoint), "--question-file", str(world / "eval" / "caption" / "questions.jsonl"),
            "--image-folder", str(world / "images"), "--answers-file", str(answers), "--n_shot", "2",
            "--max_new_tokens", "6", "--description_max_new_tokens", "4", "--no-progress",
            "--scenes", str(world / "scenes.jsonl")]
    visual_sq.main(argv)
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    scenes = load_scenes(world / "scenes.jsonl")
    expected = score_questions([(r["questions"], scenes[r["image"]]) for r in rows])
    saved = json.loads((tmp_path / "sq.jsonl.quality.json").read_text())
    assert printed["n_images"] == saved["n_images"] == 4 and saved["n_questions"] == 8
    assert saved["well_formed"] == expected["well_formed"] and saved["grounded"] == expected["grounded"]

    # the generator's own questions are all well-formed and grounded (rescored from the finished file, no model)
    rng = __import__("random").Random(0)
    good = [{**r, "questions": [qa.question for qa in make_questions(scenes[r["image"]], rng, n=2)]} for r in rows]
    answers.write_text("".join(json.dumps(r) + "\n" for r in good))
    visual_sq.main(argv)
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["well_formed"] == 1.0 and printed["grounded"] == 1.0 and printed["n_unjudged"] == 0


@pytest.mark.slow
def test_sq_end_to_end_in_subprocesses(checkpoint, data, tmp_path):
    """`--sq --n_shot 2` through `python -m` for the three entry points that have it (run side by side)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}
    sq = ["--sq", "--n_shot", "2", "--sq_max_new_tokens", "5", "--sq_description_max_new_tokens", "5",
          "--batch-size", "4"]
    runs = {
        "model_vqa_loader": _args(checkpoint, data, "questions.jsonl", tmp_path / "loader.jsonl", "--limit", "4", *sq),
        "model_vqa_science": _args(checkpoint, data, "science.json", tmp_path / "science.jsonl", "--single-pred-prompt",
                                   *sq),
        "model_cap": _args(checkpoint, data, "captions.jsonl", tmp_path / "cap.jsonl", *sq),
    }
    procs = {name: subprocess.Popen([sys.executable, "-m", f"llava.eval.{name}", *argv], cwd=REPO, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, argv in runs.items()}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, f"{name} failed:\n{err[-3000:]}"
    expected = {"loader": 4, "science": 3, "cap": 3}
    for stem, n in expected.items():
        rows = _rows(tmp_path / f"{stem}.jsonl")
        assert len(rows) == n
        for row in rows:
            ctx = row["metadata"].get("self_questioning")
            if "error" in row or (stem == "science" and row["question_id"] == "s1"):
                assert ctx is None  # unreadable image or text-only question: no self-questioning
                continue
            assert ctx["description"] and len(ctx["qa"]) == 2 and row["text"]
        meta = json.loads((tmp_path / f"{stem}.jsonl.meta.json").read_text())
        assert meta["fingerprint"]["self_questioning"]["n_shot"] == 2
