"""`python -m llava.eval.visual_qa` on a tiny saved checkpoint: record structure, resume, data-file context, the
question filter, and training's dataset reading the output with zero bad records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import write_tiny_checkpoint
from PIL import Image

from llava.eval import visual_qa
from llava.eval.visual_qa import clean_answer, clean_question, filter_questions

K = 3
FAST = ["--n_shot", str(K), "--max_new_tokens", "5", "--sq_max_new_tokens", "8", "--sq_description_max_new_tokens", "5",
        "--batch-size", "4", "--no-progress"]
DESCRIBE_Q = "<image>\nCan you describe the image in detail?"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_foundation):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("vqa_ckpt") / "tiny-llava", tiny_foundation, seed=1,
                                 image_aspect_ratio="pad")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vqa_images")
    for i in range(4):
        g = torch.Generator().manual_seed(i)
        pixels = (torch.rand(20 + 4 * i, 28, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(root / f"{i}.png")
    (root / "notes.txt").write_text("not an image")
    return root


def _run(checkpoint: Path, output: Path, *extra: str) -> None:
    visual_qa.main(["--model-path", str(checkpoint), "--output", str(output), *FAST, *extra])


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _check_record(record: dict, k: int = K) -> list[tuple[str, str]]:
    """The record is a trainable LLaVA record with at most k new QA pairs; returns its pairs."""
    assert list(record) == ["id", "image", "conversations"]
    turns = record["conversations"]
    assert len(turns) % 2 == 0 and 2 <= len(turns) <= 2 * (k + 1)
    assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
    assert all(isinstance(t["value"], str) and t["value"].strip() for t in turns)
    assert turns[0]["value"].count("<image>") == 1
    assert sum(t["value"].count("<image>") for t in turns) == 1
    pairs = [(turns[i]["value"], turns[i + 1]["value"]) for i in range(0, len(turns), 2)]
    assert all(not any(m in q for m in visual_qa.ROLE_MARKERS) for q, _ in pairs[1:])
    return pairs


def _generation(output: Path) -> dict:
    return json.loads(Path(f"{output}.meta.json").read_text())["runs"][-1]["generation"]


# ---------------------------------------------------------------------- the filter (no model)
def test_filter_drops_planted_bad_questions():
    sampled = [
        "What colour is the car?",
        "",
        "   ",
        "<image>",
        "What is on the table? USER: describe it",
        "ASSISTANT: a cat",
        "Is it raining?</s>",
        "VUSER: where is it?",
        "what colour is the car",  # a repeat (case, spaces, end punctuation)
        "What  colour is the CAR ?",
        "Can you describe the image in detail?",  # repeats the first question
        "How many people are there?\nAnswer the question using a single word or phrase.",
        "How many people are there",  # a repeat once the instruction is stripped
        "Which one is red? Answer with the option's letter from the given choices directly.",
        "Where is the <image> dog?",
    ]
    kept, dropped = filter_questions(sampled, earlier=[DESCRIBE_Q])
    assert kept == ["What colour is the car?", "How many people are there?", "Which one is red?",
                    "Where is the dog?"]
    assert dropped == {"empty": 3, "role_marker": 4, "repeat": 4}
    assert sum(dropped.values()) + len(kept) == len(sampled)
    assert clean_question("Is it sunny? answer the question using a single word or phrase") == "Is it sunny?"
    assert clean_answer("A red car.</s>USER: what?") == "A red car."
    assert clean_answer("It is <image> blue. ASSISTANT: more") == "It is blue."
    assert clean_answer("VUSER: hi") == ""


def test_flags_default_to_the_reference_sampling_and_greedy_answers():
    from llava.inference import flags

    args = visual_qa.build_parser().parse_args(["--model-path", "m", "--output", "o.jsonl", "--data-path", "d.json"])
    assert (args.answers_file, args.question_file, args.context, args.n_shot) == ("o.jsonl", "d.json", "auto", 3)
    sq = flags.sq_from_args(args, flags.decoding_from_args(args))
    q = sq.questions
    assert (q.temperature, q.top_k, q.top_p, q.max_new_tokens, q.seed) == (1.2, 300, 0.95, 300, 0)
    assert not sq.answers.do_sample and not sq.description.do_sample and sq.conv_mode == "v1_sq"
    assert sq.answers.max_new_tokens == sq.description.max_new_tokens == 1024
    args = visual_qa.build_parser().parse_args(["--model-path", "m", "--answers-file", "o.jsonl", "--temperature",
                                                "0.2", "--sq-top-k", "50", "--n-shot", "5"])
    sq = flags.sq_from_args(args, flags.decoding_from_args(args))
    assert sq.answers.temperature == 0.2 and sq.questions.top_k == 50 and sq.n_shot == 5


# ---------------------------------------------------------------------- folder mode, resume, training
def test_folder_records_resume_and_training_accepts_them(checkpoint, images, tmp_path, capsys):
    out = tmp_path / "qa.jsonl"
    argv = ["--image-folder", str(images), "--start", "1", "--end", "4"]
    _run(checkpoint, out, *argv, "--limit", "2")  # stopped after 2 images ...
    first_part = out.read_text()
    assert len(first_part.splitlines()) == 2
    _run(checkpoint, out, *argv)  # ... and resumed: only the third image is made
    rows = _rows(out)
    assert out.read_text().startswith(first_part)
    assert [r["id"] for r in rows] == [r["image"] for r in rows] == ["1.png", "2.png", "3.png"]
    kept = 0
    for record in rows:
        pairs = _check_record(record)
        assert pairs[0][0] == DESCRIBE_Q
        kept += len(pairs) - 1
    meta = json.loads((tmp_path / "qa.jsonl.meta.json").read_text())
    assert [run["questions_pending"] for run in meta["runs"]] == [2, 1]
    sq = meta["fingerprint"]["self_questioning"]
    assert sq["n_shot"] == K and sq["conv_mode"] == "v1_sq"
    assert {k: sq["questions"][k] for k in ("temperature", "top_k", "top_p", "do_sample")} == {
        "temperature": 1.2, "top_k": 300, "top_p": 0.95, "do_sample": True}
    assert meta["fingerprint"]["decoding"]["do_sample"] is False  # greedy answers
    # fewer than K pairs only when questions were dropped
    counts = [run["generation"] for run in meta["runs"]]
    assert sum(c["questions_kept"] for c in counts) == kept
    assert sum(c["questions_sampled"] for c in counts) == K * 3
    dropped = sum(v for c in counts for k, v in c.items() if k.startswith("dropped_"))
    assert kept + dropped == K * 3
    assert "visual_qa: 1 images -> 1 records" in capsys.readouterr().err

    before = out.read_text()
    _run(checkpoint, out, *argv)  # a finished file: nothing to do, nothing changes
    assert out.read_text() == before and "all 3 questions of this chunk are answered" in capsys.readouterr().err

    _assert_training_accepts(checkpoint, out, images, n=3, capsys=capsys)


def _assert_training_accepts(checkpoint: Path, data: Path, images: Path, n: int, capsys) -> None:
    from transformers import AutoTokenizer, CLIPImageProcessor

    from llava.data import inspect
    from llava.data.dataset import DataConfig, LazySupervisedDataset

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    processor = CLIPImageProcessor.from_pretrained(checkpoint)
    for template, sq_r in (("v1", 0.0), ("v1_sq", 0.5)):
        config = DataConfig(data_path=str(data), image_folder=str(images), template=template, sq_r=sq_r,
                            image_aspect_ratio="pad", bad_sample_policy="error", max_missing_images=0.0)
        dataset = LazySupervisedDataset(config, tokenizer, processor)
        assert len(dataset) == dataset.num_records == n and not dataset.skipped_up_front
        for i in range(n):
            item = dataset[i]
            assert item["index"] == i and item["pixel_values"] is not None
            assert (item["labels"] != -100).any()
        capsys.readouterr()
        inspect.main(["--data-path", str(data), "--model-name-or-path", str(checkpoint), "--version", template,
                      "--sq-r", str(sq_r), "--image-folder", str(images), "--color", "never"])
        summary = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("--- "))
        assert summary.startswith(f"--- {n} records: {n} ok, 0 bad"), summary


# ---------------------------------------------------------------------- data-file mode
def test_data_file_keeps_first_pair_and_writes_a_json_list(checkpoint, images, tmp_path, capsys):
    data = [
        {"id": "a", "image": "0.png", "conversations": [
            {"from": "human", "value": "What is shown?\n<image>"}, {"from": "gpt", "value": "Coloured noise."},
            {"from": "human", "value": "Old second question"}, {"from": "gpt", "value": "Old second answer"}]},
        {"id": "text-only", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
        {"id": 7, "image": "2.png", "conversations": [
            {"from": "human", "value": "Is it bright?"}, {"from": "gpt", "value": "No."}]},
        {"id": "c", "image": "3.png"},  # no conversation: the model describes the image
    ]
    source = tmp_path / "data.json"
    source.write_text(json.dumps(data))
    out = tmp_path / "generated.json"
    _run(checkpoint, out, "--data-path", str(source), "--image-folder", str(images))
    err = capsys.readouterr().err
    assert "1 record(s) without an image path skipped" in err and "visual_qa: 3 images -> 3 records" in err
    records = json.loads(out.read_text())
    assert [r["id"] for r in records] == ["a", 7, "c"] and [r["image"] for r in records] == ["0.png", "2.png", "3.png"]
    firsts = [_check_record(r)[0] for r in records]
    assert firsts[0] == ("What is shown?\n<image>", "Coloured noise.")  # kept as it was (training moves <image>)
    assert firsts[1] == ("<image>\nIs it bright?", "No.")
    assert firsts[2][0] == DESCRIBE_Q
    assert all("Old second" not in t["value"] for t in records[0]["conversations"])
    rows_file = tmp_path / "generated.json.rows.jsonl"
    assert [r["id"] for r in _rows(rows_file)] == ["a", 7, "c"]
    assert json.loads((tmp_path / "generated.json.rows.jsonl.meta.json").read_text())["fingerprint"]["context"] == "auto"

    _assert_training_accepts(checkpoint, out, images, n=3, capsys=capsys)


def test_planted_bad_questions_are_dropped_in_the_run(checkpoint, images, tmp_path, monkeypatch):
    """The model's sampled questions are replaced by planted ones: the record keeps only the good one."""
    from llava.inference.engine import InferenceEngine

    planted = ["What is this? VUSER: a trap", "  <image> ", "What is the main colour?\nAnswer the question using a "
               "single word or phrase.", "what is the main colour", "Can you describe the image in detail?"]
    real = InferenceEngine.generate

    def generate(self, requests, settings=None, batch_size=8, progress=False):
        texts = real(self, requests, settings, batch_size, progress)
        return [planted[r.id[2]] if isinstance(r.id, tuple) and r.id[0] == "question" else text
                for r, text in zip(requests, texts)]

    monkeypatch.setattr(InferenceEngine, "generate", generate)
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "0.png").write_bytes((images / "0.png").read_bytes())
    (folder / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "planted.json"
    _run(checkpoint, out, "--image-folder", str(folder), "--n_shot", str(len(planted)))
    error_row = _rows(tmp_path / "planted.json.rows.jsonl")[1]  # kept in the resumable rows, not in the list
    assert error_row["id"] == "broken.png" and "conversations" not in error_row and error_row["error"]
    (record,) = json.loads(out.read_text())
    pairs = _check_record(record, k=len(planted))
    assert [q for q, _ in pairs[1:]] == ["What is the main colour?"]
    counts = _generation(tmp_path / "planted.json.rows.jsonl")
    assert counts["images"] == 2 and counts["unreadable_images"] == 1 and counts["records"] == 1
    assert counts["questions_sampled"] == 5 and counts["questions_kept"] == 1
    assert (counts["dropped_empty"], counts["dropped_role_marker"], counts["dropped_repeat"]) == (1, 1, 2)
