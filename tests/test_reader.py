"""The one record reader: JSON list or JSONL (by name or content), bad lines yielded in place, strict and skipping
readers on top; training, inspect, eval questions and answer files all read a file the same way."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llava.data.reader import DataFileError, iter_records, read_records
from llava.data.records import BadRecordError
from llava.eval.answer_file import read_jsonl
from llava.eval.cli_common import read_questions

REPO = Path(__file__).resolve().parents[1]
ROWS = [{"question_id": 1, "text": "a"}, {"question_id": "2", "text": "b"}, {"question_id": 3, "text": "c"}]


def test_list_and_lines_give_the_same_records(tmp_path):
    as_list, as_lines, misnamed = tmp_path / "q.json", tmp_path / "q.jsonl", tmp_path / "q.json.txt"
    as_list.write_text(json.dumps(ROWS, indent=1))
    as_lines.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n\n")
    misnamed.write_text(as_lines.read_text())  # JSONL under another name: decided by the first character
    for path in (as_list, as_lines, misnamed):
        assert [r for _, r in iter_records(path)] == ROWS
        assert read_questions(path) == ROWS == read_jsonl(path)


def test_a_bad_line_is_yielded_in_place_and_named(tmp_path, capsys):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n\n{broken\n" + json.dumps(ROWS[2]) + "\n")
    records = list(iter_records(path))
    assert [p for p, _ in records] == [0, 1, 2]
    assert isinstance(records[1][1], BadRecordError) and records[1][1].kind == "malformed"
    assert "line 3 is not JSON" in records[1][1].reason and str(path) in records[1][1].reason
    with pytest.raises(DataFileError, match="line 3 is not JSON"):
        read_questions(path)
    assert read_records(path, what="answers", skip_bad_lines=True) == [ROWS[0], ROWS[2]]
    assert "1 malformed answers line(s) skipped (lines 3)" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "message"), [
    ('[{"id": 1},\n {"id": 2', "invalid JSON"),
    ('"just a string"', "expected a JSON list"),
])
def test_an_unreadable_list_names_the_file(tmp_path, text, message):
    path = tmp_path / "data.json"
    path.write_text(text)
    with pytest.raises(DataFileError, match=message) as info:
        list(iter_records(path))
    assert str(path) in str(info.value)


def test_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "data.json"
    path.write_bytes(b'[{"id": "\xff"}]')
    with pytest.raises(DataFileError, match="not UTF-8"):
        list(iter_records(path))


def test_the_old_shapesworld_path_still_runs():
    from llava import shapesworld as new
    from llava.data import shapesworld as old

    assert old.WorldConfig is new.WorldConfig and old.__all__ == new.__all__
    proc = subprocess.run([sys.executable, "-m", "llava.data.shapesworld", "--help"], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 0 and "--out" in proc.stdout
