"""The quickstart end to end, shortened (QUICKSTART_PRESET=ci): it must run, write its report and have learned."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from llava.quickstart.evaluate import (
    chance_levels,
    check_targets,
    format_table,
    prepare_pope,
    question_only_levels,
    vqa_scores,
)

REPO = Path(__file__).resolve().parents[1]


def test_vqa_scores_chance_and_margin():
    truth = [{"question_id": i, "answer": a, "category": "color"} for i, a in enumerate(["red", "red", "blue", "green"])]
    answers = [{"question_id": 0, "text": "Red"}, {"question_id": 2, "text": "blue"}, {"question_id": 3, "text": "red"}]
    scores = vqa_scores(answers, truth)
    m = scores["per_type"]["color"]
    assert m["accuracy"] == 0.5 and m["chance"] == 0.5 and m["majority_answer"] == "red"
    assert scores["n_missing"] == 1
    assert chance_levels(truth)["color"]["uniform"] == pytest.approx(1 / 3)
    table = format_table({"vqa": scores, "targets": check_targets({"vqa": scores})})
    assert "VQA color" in table and "| metric |" in table


def test_question_only_level_finds_phrasing_that_gives_answers_away():
    """One attribute named -> always 'yes', three named -> mostly 'no': a blind reader beats always-'no' by far; the
    same answers spread evenly over the forms leave it at or below chance."""
    one = ["Is there a circle?", "Is there a red object?", "Is there a square?", "Is there a blue object?"]
    three = ["Is there a small red circle?", "Is there a large blue square?", "Is there a small green star?",
             "Is there a large red triangle?"]
    questions = [{"question_id": i, "text": t} for i, t in enumerate(one + three + three)]
    biased = ["yes"] * 4 + ["no"] * 7 + ["yes"]
    balanced = ["yes", "no"] * 6
    for answers, low, high in ((biased, 0.9, 1.0), (balanced, 0.0, 0.5)):
        truth = [{"question_id": i, "answer": a, "category": "existence"} for i, a in enumerate(answers)]
        level = question_only_levels(questions, truth)["existence"]
        assert low <= level <= high, (answers, level)
        scores = vqa_scores([], truth, questions)
        assert scores["per_type"]["existence"]["question_only"] == level
    table = format_table({"vqa": vqa_scores([], [{"question_id": i, "answer": a, "category": "existence"}
                                                 for i, a in enumerate(biased)], questions)})
    assert "question-only 0.917, -0.583)" in table  # no answers: accuracy 0 against chance 7 / 12


def test_prepare_pope_keeps_question_and_label_texts_equal(tmp_path):
    from llava.eval.answer_file import read_jsonl
    from llava.eval.eval_pope import eval_pope, load_labels

    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    q = {"question_id": 0, "image": "a.png", "text": "Is there a red circle in the image?", "category": "random"}
    (src / "questions.jsonl").write_text(json.dumps(q) + "\n")
    (src / "coco_pope_random.json").write_text(json.dumps({**q, "label": "yes"}) + "\n")
    assert prepare_pope(src, dst) == 2
    assert prepare_pope(dst, dst) == 0  # idempotent
    rows = read_jsonl(dst / "questions.jsonl")
    assert rows[0]["text"].endswith("\nAnswer the question using a single word or phrase.")
    result = eval_pope([{"question_id": 0, "text": "Yes"}], rows, load_labels(str(dst)))
    assert result["random"]["f1"] == 1.0


def test_ablation_table(tmp_path):
    from llava.quickstart.report import ablation_table

    for projector, version, seed, acc in (("mlp2x_gelu", "v1", 0, 0.5), ("mlp2x_gelu", "v1", 1, 0.7),
                                          ("cluster", "v1_sq", 0, 0.6)):
        run = tmp_path / f"{projector}-{version}-{seed}"
        run.mkdir()
        (run / "settings.json").write_text(json.dumps({"projector": projector, "version": version, "seed": seed}))
        metrics = {"vqa": {"mean4": acc}, "pope": {"mean_f1": 0.5}, "sq": {"well_formed": 1.0, "grounded": 0.8}}
        (run / "metrics.json").write_text(json.dumps(metrics))
    table = ablation_table(tmp_path)
    assert "| mlp2x_gelu | v1 | 2 (0,1) | 0.600 ± 0.141 |" in table
    assert "| cluster | v1_sq | 1 (0) | 0.600 ± 0.000 |" in table and "n/a" in table  # no caption scores


def _run(tmp_path, name: str, seed: int, threads: int, colour: float, failed: str | None = None) -> None:
    run = tmp_path / name
    run.mkdir()
    truth = [{"question_id": i, "answer": a, "category": c}
             for i, (a, c) in enumerate([("red", "color"), ("blue", "color"), ("yes", "existence"), ("no", "existence")])]
    answers = [{"question_id": 0, "text": "red"}, {"question_id": 1, "text": "red" if colour < 1 else "blue"},
               {"question_id": 2, "text": "yes"}, {"question_id": 3, "text": "yes"}]
    metrics = {"vqa": vqa_scores(answers, truth), "timings": {"total_s": 600.0 + seed * 60}}
    metrics["targets"] = check_targets(metrics)
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "settings.json").write_text(json.dumps({"seed": seed, "threads": threads}))


def test_seeds_table_rows_and_spread(tmp_path):
    from llava.quickstart.report import seeds_table

    _run(tmp_path, "seed0", 0, 2, 1.0)
    _run(tmp_path, "seed1", 1, 2, 0.5)
    table = seeds_table(tmp_path).splitlines()
    assert "existence (binding, chance 0.500)" in table[0] and "VQA mean4" in table[0]
    assert table[2].startswith("| seed0 | 0 | 2 | 1.000 | 1.000 |") and "| 10.000 | yes |" in table[2]
    assert table[3].startswith("| seed1 | 1 | 2 | 0.500 | 0.500 |") and "no: VQA mean over 4 types" in table[3]
    assert table[4].startswith("| mean ± sd | | | 0.750 ± 0.354 |") and table[4].endswith("| 1 of 2 |")
    with pytest.raises(FileNotFoundError, match="quickstart_seeds.sh"):
        seeds_table(tmp_path / "none")


@pytest.mark.parametrize(("threads", "checked"), [(2, True), (1, False)])
def test_wall_time_is_checked_for_the_two_core_default_only(tmp_path, threads, checked):
    import time

    from llava.quickstart.report import write_report

    (tmp_path / "metrics.json").write_text(json.dumps({"timings": {"data_s": 5.0}}))
    (tmp_path / "settings.json").write_text(json.dumps({"seed": 0, "threads": threads}))
    write_report(tmp_path, started_at=time.time() - 14 * 60)  # a 14-minute run: over the 13-minute target
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 14 <= metrics["timings"]["total_s"] / 60 < 14.1
    walls = [t for t in metrics["targets"] if t["name"] == "wall time (min)"]
    assert (walls and not walls[0]["passed"]) if checked else not walls
    assert "wall time (min)" in (tmp_path / "report.md").read_text()  # reported either way


def test_binding_row_is_reported_against_chance_not_checked():
    truth = [{"question_id": i, "answer": a, "category": "existence"} for i, a in enumerate(["yes", "no"] * 5)]
    scores = vqa_scores([{"question_id": i, "text": "yes"} for i in range(10)], truth)
    targets = check_targets({"vqa": scores})
    assert not any("existence" in t["name"] for t in targets)
    table = format_table({"vqa": scores, "targets": targets})
    assert "| VQA existence, binding (n=10) | 0.500 (chance 0.500, +0.000) | vs chance | at chance |" in table


@pytest.mark.slow
def test_quickstart_ci_learns(tmp_path):
    """`bash scripts/quickstart.sh` with the ci preset, in the current venv, on a fresh output folder."""
    out = tmp_path / "qs"
    env = {**os.environ, "QUICKSTART_PRESET": "ci", "SKIP_SETUP": "1", "QUICKSTART_OUT": str(out),
           "VENV": str(Path(sys.executable).parent.parent), "MERGED": str(tmp_path / "merged")}
    # its own process group, so that a timeout stops the training processes too (about 7 minutes on 2 idle cores)
    proc = subprocess.Popen(["bash", "scripts/quickstart.sh"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=2400)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail("quickstart (ci preset) ran over 40 minutes:\n" + stdout[-2000:] + stderr[-2000:])
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    assert "| metric |" in stdout  # the table is printed
    # long phases show progress on the console; start-up prints nothing a user cannot act on
    assert "[quickstart]     step 250/500 (50%) loss" in stdout and "[quickstart]     step 200/200 (100%)" in stdout
    startup = stdout + stderr + (out / "eval.log").read_text() + (out / "self_questioning.log").read_text()
    for noise in ("torchvision", "gemm_4bit", "publisher trust"):
        assert noise not in startup, noise

    metrics = json.loads((out / "metrics.json").read_text())
    report = (out / "report.md").read_text()
    assert "VQA color" in report and (out / "plots" / "loss.png").is_file()
    assert (out / "plots" / "accuracy_per_type.png").is_file() and (out / "plots" / "self_questions.png").is_file()

    # Learning happened: the easiest question types are clearly above their chance level on held-out images.
    per_type = metrics["vqa"]["per_type"]
    # (measured on a 2-core CPU with the shipped foundation: size +0.33, count +0.26, shape +0.12, colour +0.06 over
    # chance; colour and position need the full run's stage-2 steps)
    for qtype, margin in (("size", 0.15), ("count", 0.12)):
        assert per_type[qtype]["accuracy"] >= per_type[qtype]["chance"] + margin, (qtype, per_type[qtype])
    chance4 = sum(per_type[t]["chance"] for t in ("color", "shape", "count", "position")) / 4
    assert metrics["vqa"]["mean4"] > chance4 + 0.05, (metrics["vqa"]["mean4"], chance4)
    assert metrics["sq"]["well_formed"] >= 0.8 and metrics["sq"]["distinct"] >= 5, metrics["sq"]

    # Stage 2 lowered its loss; every phase was timed.
    history = json.loads((out / "stage2" / "trainer_state.json").read_text())["log_history"]
    losses = [h["loss"] for h in history if "loss" in h]
    assert losses[-1] < losses[0] * 0.8
    assert {"data_s", "foundation_s", "stage1_s", "stage2_s", "focus_s", "eval_s", "total_s"} <= set(metrics["timings"])
    # the shipped foundation models, not a rebuild
    settings = json.loads((out / "settings.json").read_text())
    assert settings["foundation"] == "checkpoints/tiny-foundation" and settings["foundation_source"] == "shipped"
    assert metrics["timings"]["foundation_s"] < 30

    # The merged model is what the CLI and the web demo load.
    assert (tmp_path / "merged" / "config.json").is_file()
