"""The quickstart's check of the web demo's questions: a live server's /ask_questions on held-out images, judged."""

from __future__ import annotations

import json

from serve_common import write_tiny_checkpoint

from llava.quickstart.demo_questions import demo_question_scores, main
from llava.shapesworld.export import export


def test_scores_count_role_markers_and_instructions(tmp_path):
    data = tmp_path / "data"
    export(data, seed=3, n_pretrain=2, n_instruct=4, n_eval=10)
    image = json.loads((data / "scenes.jsonl").read_text().splitlines()[0])["image"]
    rows = [{"image": image, "questions": ["What color is the circle?", "What shape is the largeVUSER: What?",
                                           "Is it red? Answer the question using a single word or phrase."]},
            {"image": image, "questions": []}]
    scores = demo_question_scores(rows, data / "scenes.jsonl")
    assert scores["role_markers"] == 1 and scores["with_instruction"] == 1
    assert scores["images_without_questions"] == 1 and scores["n_questions"] == 3


def test_live_demo_questions_are_tidy(tmp_path, shipped_foundation):
    data = tmp_path / "data"
    export(data, seed=2, n_pretrain=4, n_instruct=12, n_eval=30)
    model = write_tiny_checkpoint(tmp_path / "model", shipped_foundation)
    out = tmp_path / "answers" / "demo_sq.jsonl"
    metrics = main(["--model-path", str(model), "--data", str(data), "--n", "3", "--k", "2", "--threads", "1",
                    "--out", str(out)])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and metrics["n_images"] == 3 and metrics["n_unjudged"] == 0
    questions = [q for row in rows for q in row["questions"]]
    assert questions and all(q.endswith("?") and "USER:" not in q and "Answer the" not in q for q in questions)
    assert metrics["role_markers"] == 0 and metrics["with_instruction"] == 0
    assert json.loads(out.with_suffix(".scores.json").read_text())["n_questions"] == len(questions)
    assert "Running on local URL" in out.with_suffix(".server.log").read_text()
