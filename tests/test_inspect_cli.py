"""The `python -m llava.data.inspect` CLI, run as a real subprocess on a small data file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llava.constants import IMAGE_TOKEN_INDEX
from llava.data.tokenization import preprocess_record

REPO = Path(__file__).resolve().parents[1]

RECORDS = [
    {"id": "img-1", "image": "cat.jpg", "conversations": [
        {"from": "human", "value": "What animal is this?\n<image>"}, {"from": "gpt", "value": "A small cat."},
        {"from": "human", "value": "What colour is it?"}, {"from": "gpt", "value": "Ginger 😺"}]},
    {"id": "txt-1", "conversations": [
        {"from": "human", "value": "Say hello"}, {"from": "gpt", "value": "Hello, 世界!"}]},
    {"id": "broken-7", "conversations": [{"from": "human", "value": "no answer here"}]},
]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "llava.data.inspect", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture()
def data_file(tmp_path) -> Path:
    path = tmp_path / "data.json"
    path.write_text(json.dumps(RECORDS, ensure_ascii=False), encoding="utf-8")
    return path


def test_pretty_output_marks_trained_spans(data_file, tokenizer_dir_legacy):
    out = run_cli("--data-path", str(data_file), "--model-name-or-path", str(tokenizer_dir_legacy),
                  "--version", "v1_sq", "--sq-r", "1.0").stdout
    assert "ASSISTANT:[[ A small cat.</s>]]" in out
    assert "VUSER:[[ What colour is it?</s>]] ASSISTANT:[[ Ginger 😺</s>]]" in out  # sq_r=1: turn 2 is VUSER
    assert "USER: <image>\nWhat animal is this? ASSISTANT:" in out  # the first question is context
    assert "ASSISTANT:[[ Hello, 世界!</s>]]" in out and "USER: Say hello ASSISTANT:" in out
    assert "id='broken-7'" in out and "[role_order]" in out
    assert "--- 3 records: 2 ok, 1 bad (role_order: 1)" in out
    assert "\x1b[" not in out  # not a tty: brackets, no colour


def test_jsonl_output_and_image_folder(data_file, tokenizer_dir_legacy, tmp_path):
    from transformers import AutoTokenizer

    images = tmp_path / "images"
    images.mkdir()
    out_path = tmp_path / "out.jsonl"
    out = run_cli("--data-path", str(data_file), "--model-name-or-path", str(tokenizer_dir_legacy),
                  "--version", "v1", "--jsonl", str(out_path), "--image-folder", str(images), "--max-records", "2").stdout
    assert "[missing_image]" in out and "img-1" in out and "broken-7" not in out
    assert "--- 2 records: 1 ok, 1 bad (missing_image: 1)" in out
    # Training's image table, and its verdict: the only image record has no file.
    assert f"image check under --image-folder {images}: 1 image records, 0 found, 1 missing (100.0%)" in out
    assert f"missing: id='img-1' (index 0): {images / 'cat.jpg'}" in out
    assert "!! training would stop here: 1 of 1 image records have no image file" in out
    assert "--max-missing-images 1.0" in out
    (images / "cat.jpg").write_bytes(b"not really a jpeg")
    run_cli("--data-path", str(data_file), "--model-name-or-path", str(tokenizer_dir_legacy),
            "--version", "v1", "--jsonl", str(out_path), "--image-folder", str(images))
    lines = [json.loads(line) for line in out_path.read_text().splitlines()]
    assert [line["id"] for line in lines] == ["img-1", "txt-1"]
    tok = AutoTokenizer.from_pretrained(tokenizer_dir_legacy)
    for line in lines:
        index = line["index"]
        expected = preprocess_record(RECORDS[index], tok, "v1", has_image="image" in RECORDS[index], index=index)
        assert line["input_ids"] == expected.input_ids and line["labels"] == expected.labels
    assert lines[0]["input_ids"].count(IMAGE_TOKEN_INDEX) == 1


def test_jsonl_input_and_truncation(tokenizer_dir_legacy, tmp_path):
    from transformers import AutoTokenizer

    sample = preprocess_record(RECORDS[0], AutoTokenizer.from_pretrained(tokenizer_dir_legacy), "v1", has_image=True)
    max_length = sample.expanded_length(576) - 3
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in RECORDS[:2]) + "\n{not json\n", encoding="utf-8")
    out = run_cli("--data-path", str(path), "--model-name-or-path", str(tokenizer_dir_legacy), "--version", "v1",
                  "--model-max-length", str(max_length), "--image-token-len", "576").stdout
    assert "ASSISTANT:[[ Ginger" in out and "<<truncated 3 tokens>>" in out
    assert f"({max_length} with images expanded)" in out
    assert "--- 3 records: 2 ok, 1 bad (malformed: 1)" in out and "line 3 is not JSON" in out
