"""Answer-file converters: the output format each benchmark's server or official evaluator reads, and gap reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llava.eval import answer_file, convert

REPO = Path(__file__).resolve().parents[1]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def _ans(qid, text, **extra) -> dict:
    return {
        "question_id": qid,
        "prompt": "q",
        "text": text,
        "answer_id": f"a{qid}",
        "model_id": "m",
        "metadata": {},
        **extra,
    }


def _run_script(name: str, args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / name), *args],
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def test_read_jsonl_reports_malformed_lines(tmp_path, capsys):
    path = tmp_path / "a.jsonl"
    path.write_text(
        '{"question_id": 1, "text": "x"}\n{"question_id": 2, "te\n\n{"question_id": 3, "text": "y"}\n'
    )
    rows = answer_file.read_jsonl(path)
    assert [r["question_id"] for r in rows] == [1, 3]
    assert "1 malformed answers line(s) skipped (lines 2)" in capsys.readouterr().err


def test_gqa(tmp_path):
    answers = [
        _ans("201", "Yes."),
        _ans("202", "The Table"),
        _ans("203", "", error="bad image"),
        _ans("9", "x"),
    ]
    out, report = convert.convert_gqa(answers)
    assert out[:2] == [
        {"questionId": "201", "prediction": "yes"},
        {"questionId": "202", "prediction": "the table"},
    ]
    assert len(out) == 4 and report.errors == ["203"]
    out, report = convert.convert_gqa(answers, ["201", "202", "203", "204"])
    assert [o["questionId"] for o in out] == ["201", "202", "203", "204"]
    assert out[2]["prediction"] == "" and out[3]["prediction"] == ""
    assert report.missing == ["204"] and report.unmatched == ["9"] and report.errors == ["203"]

    src = _jsonl(tmp_path / "merge.jsonl", answers)
    qfile = _jsonl(tmp_path / "q.jsonl", [{"question_id": q} for q in ("201", "202", "203", "204")])
    dst = tmp_path / "gqa" / "testdev_balanced_predictions.json"
    proc = _run_script(
        "convert_gqa_for_eval.py", ["--src", str(src), "--dst", str(dst), "--question-file", str(qfile)]
    )
    assert json.loads(dst.read_text())[0] == {"questionId": "201", "prediction": "yes"}
    assert "missing answers: 1" in proc.stderr


def test_vqav2_fills_test2015_and_normalises(tmp_path):
    root = tmp_path / "vqav2"
    split = "llava_vqav2_mscoco_test-dev2015"
    _jsonl(root / "llava_vqav2_mscoco_test2015.jsonl", [{"question_id": q} for q in (1, 2, 3, 4, 5)])
    _jsonl(root / f"{split}.jsonl", [{"question_id": q} for q in (1, 2, 3)])
    _jsonl(
        root / "answers" / split / "ckpt" / "merge.jsonl",
        [_ans(2, "Two dogs."), _ans(1, "", error="unreadable")],
    )
    _run_script("convert_vqav2_for_submission.py", ["--dir", str(root), "--ckpt", "ckpt", "--split", split])
    out = json.loads((root / "answers_upload" / split / "ckpt.json").read_text())
    assert out == [
        {"question_id": 1, "answer": ""},
        {"question_id": 2, "answer": "2 dogs"},
        {"question_id": 3, "answer": ""},
        {"question_id": 4, "answer": ""},
        {"question_id": 5, "answer": ""},
    ]
    _, report = convert.convert_vqav2([_ans(2, "x"), _ans(7, "y")], [1, 2, 3, 4, 5], [1, 2, 3])
    assert report.missing == ["1", "3"] and report.unmatched == ["7"]


def test_vizwiz(tmp_path):
    questions = [
        {"question_id": 0, "image": "VizWiz_test_00000000.jpg"},
        {"question_id": 1, "image": "VizWiz_test_00000001.jpg"},
    ]
    answers = [_ans(1, "Unanswerable."), _ans(0, "The Coca-Cola can")]
    out, report = convert.convert_vizwiz(answers, questions)
    assert out == [
        {"image": "VizWiz_test_00000000.jpg", "answer": "coca cola can"},
        {"image": "VizWiz_test_00000001.jpg", "answer": "unanswerable"},
    ]
    assert not report.has_gaps
    out, report = convert.convert_vizwiz(answers[:1], questions)
    assert out[0]["answer"] == "" and report.missing == ["0"]
    afile = _jsonl(tmp_path / "a.jsonl", answers)
    qfile = _jsonl(tmp_path / "q.jsonl", questions)
    dst = tmp_path / "up" / "vizwiz.json"
    _run_script(
        "convert_vizwiz_for_submission.py",
        ["--annotation-file", str(qfile), "--result-file", str(afile), "--result-upload-file", str(dst)],
    )
    assert json.loads(dst.read_text())[0]["answer"] == "coca cola can"


@pytest.mark.parametrize("lang", ["en", "cn"])
def test_mmbench_xlsx(tmp_path, lang):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("openpyxl")
    question = "图中是什么动物？" if lang == "cn" else "Which animal is shown?"
    table = pd.DataFrame(
        {
            "index": [10, 11, 12],
            "question": [question, "Q2", "Q3"],
            "hint": ["h", None, None],
            "A": ["cat", "x", "p"],
            "B": ["dog", "y", "q"],
            "C": ["cow", None, "r"],
            "D": [None, None, "s"],
            "answer": ["A", "B", "D"],
            "category": ["c"] * 3,
            "image": ["iVBORw0KGgo" * 10] * 3,
            "source": ["s"] * 3,
            "l2-category": ["l2"] * 3,
            "split": ["dev"] * 3,
        }
    )
    tsv = tmp_path / f"mmbench_dev_{lang}.tsv"
    table.to_csv(tsv, sep="\t", index=False)
    answers = [
        _ans(10, "A"),
        _ans(10, "C", round_id=1),  # a later option rotation: ignored
        _ans(12, "", error="bad base64"),
    ]
    _jsonl(tmp_path / "answers" / "exp.jsonl", answers)
    proc = _run_script(
        "convert_mmbench_for_submission.py",
        [
            "--annotation-file",
            str(tsv),
            "--result-dir",
            str(tmp_path / "answers"),
            "--upload-dir",
            str(tmp_path / "upload"),
            "--experiment",
            "exp",
        ],
    )
    df = pd.read_excel(tmp_path / "upload" / "exp.xlsx", engine="openpyxl")
    assert list(df.columns) == ["index", "question", "A", "B", "C", "D", "prediction", "answer", "split"]
    assert df.loc[0, "question"] == question and df.loc[0, "prediction"] == "A"
    assert pd.isna(df.loc[1, "prediction"]) or df.loc[1, "prediction"] == ""
    assert (
        "missing answers: 1" in proc.stderr
        and "error rows: 1" in proc.stderr
        and "round_id > 0" in proc.stdout
    )


def test_seed(tmp_path):
    annotation = {
        "question_type": {"Scene Understanding": 1, "Instance Counting": 2},
        "questions": [
            {"question_id": "0", "question_type_id": 1, "answer": "A", "data_type": "image"},
            {"question_id": "1", "question_type_id": 1, "answer": "B", "data_type": "image"},
            {"question_id": "2", "question_type_id": 2, "answer": "C", "data_type": "image"},
            {"question_id": "3", "question_type_id": 2, "answer": "D", "data_type": "video"},
        ],
    }
    answers = [_ans(0, "A"), _ans(1, "C"), _ans(2, "C")]  # int ids join the annotation's string ids
    out, acc, report = convert.convert_seed(answers, annotation)
    assert out == [
        {"question_id": "0", "prediction": "A"},
        {"question_id": "1", "prediction": "C"},
        {"question_id": "2", "prediction": "C"},
        {"question_id": "3", "prediction": ""},
    ]
    assert acc["all"]["Scene Understanding"] == pytest.approx(50.0)
    assert acc["all"]["Instance Counting"] == pytest.approx(50.0)
    assert acc["all"]["total"] == pytest.approx(50.0)
    assert acc["image"]["total"] == pytest.approx(200 / 3) and acc["video"]["total"] == 0.0
    assert report.missing == ["3"]
    ann = tmp_path / "SEED-Bench.json"
    ann.write_text(json.dumps(annotation))
    dst = tmp_path / "upload" / "seed.jsonl"
    proc = _run_script(
        "convert_seed_for_submission.py",
        [
            "--annotation-file",
            str(ann),
            "--result-file",
            str(_jsonl(tmp_path / "a.jsonl", answers)),
            "--result-upload-file",
            str(dst),
        ],
    )
    assert [json.loads(x) for x in dst.read_text().splitlines()] == out
    assert "Total accuracy: 50.00%" in proc.stdout and "image accuracy: 66.67%" in proc.stdout


def test_mmvet(tmp_path):
    answers = [_ans(0, "A cat."), _ans(2, "", error="unreadable")]
    out, report = convert.convert_mmvet(answers)
    assert out == {"v1_0": "A cat.", "v1_2": ""} and report.errors == ["2"]
    out, report = convert.convert_mmvet(answers, [0, 1, 2])
    assert out == {"v1_0": "A cat.", "v1_1": "", "v1_2": ""} and report.missing == ["1"]
    dst = tmp_path / "results" / "mmvet.json"
    _run_script(
        "convert_mmvet_for_eval.py", ["--src", str(_jsonl(tmp_path / "a.jsonl", answers)), "--dst", str(dst)]
    )
    assert json.loads(dst.read_text()) == {"v1_0": "A cat.", "v1_2": ""}


def _mme_tree(root: Path) -> None:
    """Two MME categories in both official layouts; one GT question has the double space the real files have."""
    art = root / "MME_Benchmark_release_version" / "artwork"
    (art / "images").mkdir(parents=True)
    (art / "questions_answers_YN").mkdir()
    (art / "images" / "10002.jpg").write_bytes(b"")
    (art / "questions_answers_YN" / "10002.txt").write_text(
        "Is this artwork created by Hans? Please answer yes or no.\tYes\n"
        "Is this artwork created by Cima?  Please answer yes or no.\tNo\n"
    )
    code = root / "MME_Benchmark_release_version" / "code_reasoning"
    code.mkdir(parents=True)
    (code / "0020.png").write_bytes(b"")
    (code / "0020.txt").write_text(
        "Is the output 5? Please answer yes or no.\tYes\nIs the output 6? Please answer yes or no.\tNo\n"
    )


def test_mme(tmp_path):
    _mme_tree(tmp_path)
    suffix = "\nAnswer the question using a single word or phrase."
    answers = [
        {
            "question_id": "artwork/images/10002.jpg",
            "prompt": "Is this artwork created by Hans? Please answer yes or no." + suffix,
            "text": "Yes",
        },
        {
            "question_id": "artwork/images/10002.jpg",
            "prompt": "Is this artwork created by Cima? Please answer yes or no." + suffix,
            "text": "No,\tit is not",
        },
        {
            "question_id": "code_reasoning/0020.png",
            "prompt": "Is the output 5? Please answer yes or no." + suffix,
            "text": "",
            "error": "unreadable",
        },
        # "Is the output 6?" unanswered
    ]
    _jsonl(tmp_path / "answers" / "exp.jsonl", answers)
    proc = _run_script("convert_answer_to_mme.py", ["--experiment", "exp"], cwd=tmp_path)
    result_dir = tmp_path / "eval_tool" / "answers" / "exp"
    art = [line.split("\t") for line in (result_dir / "artwork.txt").read_text().splitlines()]
    assert art == [
        ["10002.jpg", "Is this artwork created by Hans? Please answer yes or no.", "Yes", "Yes"],
        ["10002.jpg", "Is this artwork created by Cima?  Please answer yes or no.", "No", "No, it is not"],
    ]
    code = [line.split("\t") for line in (result_dir / "code_reasoning.txt").read_text().splitlines()]
    assert code == [
        ["0020.png", "Is the output 5? Please answer yes or no.", "Yes", ""],
        ["0020.png", "Is the output 6? Please answer yes or no.", "No", ""],
    ]
    assert "missing answers: 1" in proc.stderr and "error rows: 1" in proc.stderr


def test_cli_lists_every_benchmark():
    proc = subprocess.run(
        [sys.executable, "-m", "llava.eval.convert", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0
    for name in ("gqa", "vqav2", "vizwiz", "mmbench", "seed", "mmvet", "mme"):
        assert name in proc.stdout
