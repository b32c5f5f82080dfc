"""Known-answer tests for the POPE, TextVQA (VQA soft accuracy), ScienceQA and LLaVA-Bench review scorers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llava.eval import eval_pope, eval_science_qa, eval_textvqa, gpt_review, summarize_gpt_review
from llava.eval.answer_file import JoinReport
from llava.eval.eval_mmbench import mmbench_choice
from llava.eval.m4c_evaluator import (
    EvalAIAnswerProcessor,
    TextVQAAccuracyEvaluator,
    normalize_answer,
    vqa_soft_score,
)
from llava.eval.short_answer import normalize_short_answer

REPO = Path(__file__).resolve().parents[1]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------------------------------------ POPE


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Yes, there is a dog in the image.", "yes"),
        ("No, there is no cat.", "no"),
        ("There is not a car.", "no"),
        ("Yes. But there is no cat.", "yes"),  # only the first sentence counts
        ("Yes, there is a notebook.", "yes"),  # "notebook" is not the word "not"
        ("Not at all", "yes"),  # LLaVA's word list is case-sensitive: "Not" is not in it
        ("no", "no"),
        ("", "yes"),
        ("No\nThere is a cat", "yes"),  # LLaVA splits on single spaces: "No\nThere" is one word
        ("No\tthe cat", "yes"),
        ("There is  no cat", "no"),  # a double space leaves an empty word, "no" still counts
        ("No", "no"),
    ],
)
def test_pope_yes_no_parsing(text, expected):
    assert eval_pope.parse_yes_no(text) == expected


def _pope_fixture(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Two splits; the label files number questions 1..N per split, the question file 101.. (LLaVA's layout)."""
    random_split = [
        ("dog", "yes"),
        ("cat", "yes"),
        ("car", "yes"),
        ("bus", "no"),
        ("cup", "no"),
        ("kite", "no"),
    ]
    popular_split = [("person", "yes"), ("chair", "no"), ("bench", "yes"), ("tie", "no")]
    questions, labels = [], {"random": [], "popular": []}
    qid = 101
    for split, items in (("random", random_split), ("popular", popular_split)):
        for n, (obj, label) in enumerate(items, 1):
            text = f"Is there a {obj} in the image?"
            image = f"COCO_val2014_{qid:012d}.jpg"
            questions.append({"question_id": qid, "image": image, "text": text, "category": split})
            labels[split].append({"question_id": n, "image": image, "text": text, "label": label})
            qid += 1
    answers = {
        101: "Yes, there is a dog.",  # yes label -> TP
        102: "No.",  # yes label -> FN
        # 103 missing: yes label -> FN (counted as wrong)
        104: "There is no bus in the image.",  # TN
        105: "Yes",  # FP
        106: "I do not think so.",  # TN
        107: "Yes. No doubt about it.",  # TP (first sentence only)
        108: None,  # error row, no label -> FP (counted as wrong)
        109: "yes",  # TP
        110: "Not at all",  # parsed as yes (case-sensitive word list) -> FP
    }
    rows = []
    for q, text in answers.items():
        row = {
            "question_id": q,
            "prompt": "...",
            "text": text or "",
            "answer_id": f"a{q}",
            "model_id": "m",
            "metadata": {},
        }
        if text is None:
            row["error"] = "cannot identify image file"
        rows.append(row)
    rows.append({"question_id": 999, "prompt": "...", "text": "yes"})  # no such question
    rows.append({"question_id": 101, "prompt": "...", "text": "No"})  # duplicate: the first answer is kept
    ann_dir = tmp_path / "pope"
    ann_dir.mkdir()
    for split, rows_ in labels.items():
        _jsonl(ann_dir / f"coco_pope_{split}.json", rows_)
    return ann_dir, _jsonl(tmp_path / "questions.jsonl", questions), _jsonl(tmp_path / "answers.jsonl", rows)


def test_pope_counts_match_hand_computed(tmp_path):
    ann_dir, qfile, afile = _pope_fixture(tmp_path)
    report = JoinReport("pope")
    result = eval_pope.eval_pope(
        eval_pope.read_jsonl(afile), eval_pope.read_jsonl(qfile), eval_pope.load_labels(str(ann_dir)), report
    )
    r = result["random"]
    assert (r["TP"], r["FP"], r["TN"], r["FN"]) == (1, 1, 2, 2)
    assert r["accuracy"] == pytest.approx(3 / 6)
    assert r["precision"] == pytest.approx(1 / 2)
    assert r["recall"] == pytest.approx(1 / 3)
    assert r["f1"] == pytest.approx(0.4)  # 2 * (1/2 * 1/3) / (1/2 + 1/3)
    assert r["yes_ratio"] == pytest.approx(2 / 5)  # over the 5 answered questions
    assert (r["n_missing"], r["n_errors"]) == (1, 0)
    p = result["popular"]
    assert (p["TP"], p["FP"], p["TN"], p["FN"]) == (2, 2, 0, 0)
    assert p["precision"] == pytest.approx(0.5) and p["recall"] == pytest.approx(1.0)
    assert p["f1"] == pytest.approx(2 / 3)
    assert p["yes_ratio"] == pytest.approx(1.0)
    assert (p["n_missing"], p["n_errors"]) == (0, 1)
    assert result["mean_f1"] == pytest.approx((0.4 + 2 / 3) / 2)
    assert report.missing == ["103"] and report.errors == ["108"]
    assert report.unmatched == ["999"] and report.duplicates == ["101"]
    table = eval_pope.format_table(result)
    assert "random" in table and "mean F1 over 2 splits: 53.33" in table


def test_pope_joins_labels_by_id_when_they_match_and_checks_text(tmp_path):
    questions = [{"question_id": i, "text": f"Is there a q{i}?", "category": "random"} for i in (1, 2, 3)]
    labels = [
        {"question_id": i, "text": f"Is there a q{i}?", "label": lab}
        for i, lab in ((3, "no"), (1, "yes"), (2, "no"))
    ]
    answers = [
        {"question_id": 1, "text": "Yes"},
        {"question_id": 2, "text": "No"},
        {"question_id": 3, "text": "No"},
    ]
    r = eval_pope.eval_pope(answers, questions, {"random": labels})["random"]
    assert (r["TP"], r["FP"], r["TN"], r["FN"]) == (1, 0, 2, 0)
    bad = [dict(labels[0], question_id=7), labels[1], dict(labels[2], text="Is there a zebra?")]
    with pytest.raises(ValueError, match="text"):
        eval_pope.eval_pope(answers, questions, {"random": bad})


def test_pope_cli(tmp_path):
    ann_dir, qfile, afile = _pope_fixture(tmp_path)
    out = tmp_path / "o" / "pope.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "llava.eval.eval_pope",
            "--annotation-dir",
            str(ann_dir),
            "--question-file",
            str(qfile),
            "--result-file",
            str(afile),
            "--output-file",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "mean F1 over 2 splits: 53.33" in proc.stdout and "missing answers: 1" in proc.stderr
    assert json.loads(out.read_text())["random"]["TP"] == 1


# ------------------------------------------------------------------------------------------------ TextVQA / VQA


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Two", "2"),
        ("the dog.", "dog"),
        ("A Dog", "dog"),
        ("an apple", "apple"),
        ("none", "0"),
        ("dont", "don't"),
        ("isnt it", "isn't it"),
        ("couldnt've", "couldn't've"),
        ("It's red", "it 's red"),
        ("coca-cola", "coca cola"),  # a mark inside a word becomes a space
        ("yes !", "yes"),  # a mark next to a space is deleted
        ("3.5", "3.5"),  # a period before a digit stays
        ("1,000", "1000"),
        ("What?", "what"),
        ("  New\nYork  ", "new york"),
    ],
)
def test_evalai_normalisation(raw, expected):
    assert normalize_answer(raw) == expected
    assert EvalAIAnswerProcessor()(raw) == expected


@pytest.mark.parametrize(
    "n_matching, expected",
    [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)],
)
def test_vqa_soft_accuracy_leave_one_out(n_matching, expected):
    """min(#matches / 3, 1) averaged over the 10 leave-one-out subsets (3 of 10 humans give 0.9, not 1.0)."""
    gts = ["Two"] * n_matching + ["three"] * (10 - n_matching)
    assert vqa_soft_score("2", gts) == pytest.approx(expected)


def test_vqa_soft_accuracy_normalises_both_sides():
    gts = ["the dog", "Dog", "dog.", "a dog", "cat", "cat", "cat", "cat", "cat", "cat"]
    assert vqa_soft_score("DOG!", gts) == pytest.approx(1.0)
    assert vqa_soft_score("cats", gts) == 0.0
    entries = [{"pred_answer": "dog", "gt_answers": gts}, {"pred_answer": "bird", "gt_answers": gts}]
    assert TextVQAAccuracyEvaluator().eval_pred_list(entries) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "prompt, question",
    [
        (
            "What is written?\nReference OCR token: stop, sign\nAnswer the question using a single word or phrase.",
            "what is written?",
        ),
        (
            "Reference OCR token: stop\nWhat Is Written?\nAnswer the question using a single word or phrase.",
            "what is written?",
        ),
        ("What brand?\nAnswer the question using a single word or phrase.", "what brand?"),
        ("OCR tokens: a b Question: Which team? Short answer:", "which team?"),
    ],
)
def test_textvqa_question_from_prompt(prompt, question):
    assert eval_textvqa.question_from_prompt(prompt) == question


def test_textvqa_join_and_accuracy(tmp_path):
    gts_a = ["Two"] * 3 + ["three"] * 7  # "2" scores 0.9
    gts_b = ["stop"] * 10
    gts_c = ["nike"] * 10
    gts_d = ["red"] * 10
    annotations = [
        {"question_id": 1, "image_id": "img_a", "question": "How many cups?", "answers": gts_a},
        {"question_id": 2, "image_id": "img_b", "question": "What does the sign say?", "answers": gts_b},
        {"question_id": 3, "image_id": "img_c", "question": "What brand?", "answers": gts_c},
        {"question_id": 4, "image_id": "img_d", "question": "What color?", "answers": gts_d},
        {"question_id": 5, "image_id": "img_e", "question": "What time?", "answers": gts_d},
    ]
    suffix = "\nReference OCR token: x\nAnswer the question using a single word or phrase."
    answers = [
        # LLaVA's layout: question_id holds the image id, the question comes from the prompt.
        {"question_id": "img_a", "prompt": "How many cups?" + suffix, "text": "Two"},
        {"question_id": "img_b", "prompt": "What does the sign say?" + suffix, "text": "STOP."},
        # Our own question files: the real question_id.
        {"question_id": 3, "prompt": "<image>\nsomething else entirely", "text": "Nike"},
        {"question_id": 4, "prompt": "What color?" + suffix, "text": "", "error": "unreadable image"},
        # question 5 unanswered; one answer matches nothing
        {"question_id": "img_z", "prompt": "Who?" + suffix, "text": "me"},
    ]
    report = JoinReport("textvqa")
    result = eval_textvqa.eval_textvqa(answers, annotations, report)
    assert result["accuracy"] == pytest.approx((0.9 + 1.0 + 1.0 + 0.0 + 0.0) / 5)
    assert result["accuracy_answered"] == pytest.approx((0.9 + 1.0 + 1.0) / 3)
    assert report.missing == ["5"] and report.errors == ["4"] and report.unmatched == ["img_z"]

    ann_file = tmp_path / "TextVQA_0.5.1_val.json"
    ann_file.write_text(json.dumps({"data": annotations}))
    res_file = _jsonl(tmp_path / "answers.jsonl", answers)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "llava.eval.eval_textvqa",
            "--annotation-file",
            str(ann_file),
            "--result-file",
            str(res_file),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Accuracy: 58.00%" in proc.stdout and "missing answers: 1" in proc.stderr


# ------------------------------------------------------------------------------------------------ ScienceQA


@pytest.mark.parametrize(
    "text, n_choices, letter",
    [
        ("A", 3, "A"),
        ("B.", 3, "B"),
        ("C. Because plants need light.", 3, "C"),
        ("(B)", 2, "B"),
        ("The answer is B.", 3, "B"),
        ("The answer is C", 3, "C"),
        ("Let me think.\nThe answer is A.", 3, "A"),
        ("The answer is D.", 3, "FAILED"),  # not one of the 3 choices
        ("D", 3, "FAILED"),
        ("A dog is a mammal.", 3, "FAILED"),  # the article "A" is not an option letter
        ("I think it is B", 3, "FAILED"),
        ("The answer is A. The answer is B.", 3, "FAILED"),  # two different statements
        ("", 3, "FAILED"),
    ],
)
def test_science_qa_letter_parsing(text, n_choices, letter):
    assert eval_science_qa.parse_option_letter(text, n_choices) == letter


def _sqa_fixture(tmp_path: Path) -> tuple[Path, Path]:
    problems = {
        "1": {"choices": ["x", "y"], "answer": 0, "image": "image.png"},
        "2": {"choices": ["x", "y", "z"], "answer": 2, "image": "image.png"},
        "3": {"choices": ["x", "y"], "answer": 1, "image": None},
        "4": {"choices": ["x", "y"], "answer": 1, "image": None},
        "5": {"choices": ["x", "y", "z"], "answer": 0, "image": "image.png"},
        "6": {"choices": ["x", "y"], "answer": 0, "image": None},
        "99": {"choices": ["x", "y"], "answer": 0, "image": None},  # not in the test split
    }
    base = tmp_path / "scienceqa"
    base.mkdir()
    (base / "problems.json").write_text(json.dumps(problems))
    (base / "pid_splits.json").write_text(
        json.dumps({"test": ["1", "2", "3", "4", "5", "6"], "train": ["99"]})
    )
    answers = [
        {"question_id": "1", "prompt": "<image>\nQ1", "text": "A"},  # correct, IMG
        {"question_id": "2", "prompt": "<image>\nQ2", "text": "The answer is C."},  # correct, IMG
        {"question_id": "3", "prompt": "Q3", "text": "B. y"},  # correct
        {"question_id": "4", "prompt": "Q4", "text": "A"},  # wrong
        {"question_id": "5", "prompt": "<image>\nQ5", "text": "", "error": "unreadable image"},  # wrong, IMG
        # 6 missing -> wrong
        {"question_id": "99", "prompt": "Q99", "text": "A"},  # outside the split
    ]
    return base, _jsonl(tmp_path / "answers.jsonl", answers)


def test_science_qa_accuracy_and_img_subset(tmp_path):
    base, afile = _sqa_fixture(tmp_path)
    out_file, out_result = tmp_path / "out" / "analysis.json", tmp_path / "out" / "result.json"
    summary = eval_science_qa.main(
        [
            "--base-dir",
            str(base),
            "--result-file",
            str(afile),
            "--output-file",
            str(out_file),
            "--output-result",
            str(out_result),
        ]
    )
    assert (summary["correct"], summary["count"]) == (3, 6)
    assert summary["acc"] == pytest.approx(50.0)
    assert (summary["img_correct"], summary["img_count"]) == (2, 3)
    assert summary["img_acc"] == pytest.approx(200 / 3)
    assert summary["n_failed_parse"] == 2  # the error row and the missing answer
    assert summary["report"]["missing_ids"] == ["6"] and summary["report"]["error_ids"] == ["5"]
    assert summary["report"]["unmatched_ids"] == ["99"]
    saved = json.loads(out_result.read_text())
    assert saved["results"] == {"1": 0, "2": 2, "3": 1, "4": 0, "5": -1, "6": -1}
    analysis = json.loads(out_file.read_text())
    assert {r["question_id"] for r in analysis["correct"]} == {"1", "2", "3"}
    assert next(r for r in analysis["incorrect"] if r["question_id"] == "5")["error"] == "unreadable image"


# ------------------------------------------------------------------------------------------------ LLaVA-Bench review


@pytest.mark.parametrize(
    "review, scores",
    [
        ("8 7\nBoth are fine.", [8.0, 7.0]),
        ("8, 6.5\n...", [8.0, 6.5]),
        ("Score: 8\n", [-1.0, -1.0]),
        ("", [-1.0, -1.0]),
    ],
)
def test_parse_review_scores(review, scores):
    assert gpt_review.parse_score(review) == scores


def test_rule_file_has_every_llava_bench_category():
    rules = json.loads(gpt_review.DEFAULT_RULE_FILE.read_text())
    for cat in ("conv", "detail", "complex"):
        rule = rules[f"llava_bench_{cat}"]
        assert rule["role"] == "Assistant" and "first line" in rule["prompt"]


def _bench_fixture(tmp_path: Path) -> dict[str, Path]:
    questions = [
        {"question_id": 0, "image": "001.jpg", "text": "What is shown?", "category": "conv"},
        {"question_id": 1, "image": "001.jpg", "text": "Describe the image.", "category": "detail"},
        {"question_id": 2, "image": "002.jpg", "text": "Why is it funny?", "category": "complex"},
    ]
    contexts = [
        {"id": "001", "image": "001.jpg", "caption": "A cat on a sofa."},
        {"image": "002.jpg", "caption": ["A", "B"]},
    ]
    refs = [{"question_id": i, "answer_id": f"gpt4_{i}", "text": f"reference {i}"} for i in range(3)]
    # Shuffled, one missing: answers are joined by question_id, not by line.
    answers = [
        {"question_id": 2, "answer_id": "m2", "text": "model 2"},
        {"question_id": 0, "answer_id": "m0", "text": "model 0"},
    ]
    return {
        "q": _jsonl(tmp_path / "questions.jsonl", questions),
        "c": _jsonl(tmp_path / "context.jsonl", contexts),
        "ref": _jsonl(tmp_path / "answers_gpt4.jsonl", refs),
        "model": _jsonl(tmp_path / "model.jsonl", answers),
    }


def test_review_with_fake_judge_and_summary(tmp_path, capsys):
    files = _bench_fixture(tmp_path)
    scores = {"model 0": (8, 6), "model 2": (10, 9), "": (8, 1)}

    def by_answer(prompt: str) -> tuple[float, float]:
        answer2 = prompt.split("[Assistant 2]\n")[1].split("\n\n[End of Assistant 2]")[0]
        return scores[answer2]

    judge = gpt_review.FakeJudge(by_answer)
    rules = json.loads(gpt_review.DEFAULT_RULE_FILE.read_text())
    load = gpt_review.read_jsonl
    reviews = list(
        gpt_review.review_answers(
            load(files["q"]), load(files["c"]), load(files["ref"]), load(files["model"]), rules, judge
        )
    )
    assert [r["question_id"] for r in reviews] == [0, 1, 2]
    assert [r["tuple"] for r in reviews] == [[8.0, 6.0], [8.0, 1.0], [10.0, 9.0]]
    assert reviews[1]["answer2_error"] == "missing answer" and reviews[1]["answer2_id"] is None
    assert reviews[0]["category"] == "llava_bench_conv" and reviews[0]["answer1_id"] == "gpt4_0"
    assert set(reviews[0]) >= {
        "id",
        "question_id",
        "answer1_id",
        "answer2_id",
        "category",
        "content",
        "tuple",
    }
    assert judge.prompts[0].startswith("[Context]\nA cat on a sofa.\n\n[Question]\nWhat is shown?")
    assert "[Context]\nA\nB\n\n" in judge.prompts[2]  # a caption list is joined by lines

    summary = summarize_gpt_review.summarize_reviews(reviews)
    assert summary["llava_bench_conv"]["relative"] == pytest.approx(75.0)
    assert summary["llava_bench_detail"]["relative"] == pytest.approx(12.5)
    assert summary["all"]["relative"] == pytest.approx(round(100 * (16 / 3) / (26 / 3), 1))
    assert summary["all"]["reference"] == pytest.approx(86.7) and summary["all"]["model"] == pytest.approx(
        53.3
    )
    bad = summarize_gpt_review.summarize_reviews(
        [*reviews, {"question_id": 9, "category": "x", "tuple": [-1, -1]}]
    )
    assert bad["all"]["n"] == 3 and bad["all"]["n_invalid"] == 1


def test_review_cli_resumes_and_summarize_cli(tmp_path):
    files = _bench_fixture(tmp_path)
    out = tmp_path / "reviews" / "review_model.jsonl"
    argv = [
        "-q",
        str(files["q"]),
        "-c",
        str(files["c"]),
        "-a",
        str(files["ref"]),
        str(files["model"]),
        "-o",
        str(out),
        "--judge",
        "fake",
    ]
    assert gpt_review.main(argv) == 3
    assert gpt_review.main(argv) == 0  # every question already reviewed
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 3 and all(r["judge"] == "fake" for r in lines)
    proc = subprocess.run(
        [sys.executable, "-m", "llava.eval.summarize_gpt_review", "-f", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "llava_bench_conv" in proc.stdout and "75.0" in proc.stdout and "fake judge" in proc.stderr


def test_openai_judge_builds_request_without_calling(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(RuntimeError, match="OPENAI_API_KEY"):
        gpt_review.OpenAIJudge()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    judge = gpt_review.OpenAIJudge(model="judge-x", base_url="http://localhost:9/v1/")
    req = judge.build_request("hello")
    assert req.full_url == "http://localhost:9/v1/chat/completions" and req.get_method() == "POST"
    assert req.get_header("Authorization") == "Bearer sk-test"
    body = json.loads(req.data)
    assert body["model"] == "judge-x" and body["messages"][1] == {"role": "user", "content": "hello"}
    assert body["temperature"] == 0.2


def test_normalize_short_answer():
    assert normalize_short_answer(" Red.") == "red"
    assert normalize_short_answer("A large red circle\nmore") == "large red circle"
    assert normalize_short_answer("two") == "2" and normalize_short_answer("Top-left") == "top left"


def test_mmbench_choice():
    options = {"A": "red", "B": "blue", "C": "top left", "D": "green"}
    assert mmbench_choice("B", options) == "B" and mmbench_choice("(C)", options) == "C"
    assert mmbench_choice("D.", options) == "D"
    assert mmbench_choice("blue", options) == "B" and mmbench_choice("It is in the top left.", options) == "C"
    assert mmbench_choice("A large object", options) is None  # an article, not the letter A
    assert mmbench_choice("red or blue", options) is None


def test_mmbench_scorer_cli(tmp_path, capsys):
    from llava.eval import eval_mmbench

    tsv = tmp_path / "dev.tsv"
    header = ["index", "question", "A", "B", "C", "D", "answer", "category"]
    rows = [["0", "Colour?", "red", "blue", "", "", "A", "color"], ["1", "Shape?", "circle", "square", "star", "", "C",
            "shape"], ["2", "Count?", "1", "2", "3", "4", "B", "count"]]
    tsv.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n")
    answers = tmp_path / "answers.jsonl"
    answers.write_text("\n".join(json.dumps(r) for r in [
        {"question_id": 0, "round_id": 0, "text": "A"}, {"question_id": 0, "round_id": 1, "text": "B"},
        {"question_id": "1", "text": "It is a star."}, {"question_id": 2, "text": "", "error": "unreadable image"},
    ]) + "\n")
    out = tmp_path / "scores.json"
    scores = eval_mmbench.main(["--question-file", str(tsv), "--result-file", str(answers), "--output-file", str(out)])
    assert scores["accuracy"] == pytest.approx(2 / 3) and scores["n"] == 3
    assert scores["per_category"] == {"color": 1.0, "count": 0.0, "shape": 1.0}
    assert scores["letter_rate"] == pytest.approx(1 / 3) and scores["matched_rate"] == pytest.approx(2 / 3)
    assert json.loads(out.read_text())["accuracy"] == pytest.approx(2 / 3)
    assert "accuracy 0.6667 on 3 questions" in capsys.readouterr().out
