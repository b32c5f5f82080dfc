"""Per-benchmark converters from answer files to submission / official-evaluator formats (`python -m llava.eval.convert`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from llava.constants import SHORT_ANSWER_PROMPT
from llava.eval.answer_file import (
    JoinReport,
    answer_error,
    answer_text,
    id_key,
    index_answers,
    join_answers,
    read_jsonl,
)
from llava.eval.m4c_evaluator import normalize_answer

PathLike = str | os.PathLike


def _write_json(obj: Any, dst: PathLike, indent: int | None = None) -> None:
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    with open(dst, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)


def _write_jsonl(rows: Iterable[Mapping[str, Any]], dst: PathLike) -> None:
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    with open(dst, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------------------------------------------
# GQA: [{"questionId", "prediction"}] for the official eval.py (testdev_balanced_predictions.json).
# --------------------------------------------------------------------------------------------------------------


def convert_gqa(
    answers: Sequence[Mapping[str, Any]], question_ids: Sequence[Any] | None = None
) -> tuple[list[dict[str, Any]], JoinReport]:
    """GQA predictions: text without trailing periods, lower-cased. With `question_ids`, every question gets a
    prediction ("" when unanswered; the official eval.py raises KeyError on a missing one)."""
    report = JoinReport("gqa")
    if question_ids is None:
        by_id = index_answers(answers, report)
        pairs = [(row.get("question_id"), row) for row in by_id.values()]
        report.n_expected = len(pairs)
    else:
        pairs = list(zip(question_ids, join_answers(question_ids, answers, report)))
    out = [
        {"questionId": qid, "prediction": answer_text(row).rstrip(".").lower() if row else ""}
        for qid, row in pairs
    ]
    report.n_written = len(out)
    return out, report


def _gqa_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--src", required=True, help="answer jsonl (merged)")
    p.add_argument("--dst", required=True, help="output predictions json")
    p.add_argument(
        "--question-file", default=None, help='question jsonl; when given, unanswered questions get ""'
    )


def _gqa_run(a: argparse.Namespace) -> JoinReport:
    qids = [q["question_id"] for q in read_jsonl(a.question_file, "question")] if a.question_file else None
    out, report = convert_gqa(read_jsonl(a.src), qids)
    _write_json(out, a.dst)
    return report


# --------------------------------------------------------------------------------------------------------------
# VQAv2: EvalAI submission [{"question_id", "answer"}] over the whole test2015 question list.
# --------------------------------------------------------------------------------------------------------------


def convert_vqav2(
    answers: Sequence[Mapping[str, Any]],
    test_question_ids: Sequence[Any],
    split_question_ids: Sequence[Any] | None = None,
) -> tuple[list[dict[str, Any]], JoinReport]:
    """EvalAI-normalised answers for every test2015 question (the server needs every id); questions outside
    the answered split get "". Gaps are checked against `split_question_ids` (the test-dev question list)
    when given; unanswered split questions also get ""."""
    report = JoinReport("vqav2")
    if split_question_ids is not None:
        aligned = join_answers(split_question_ids, answers, report)
        by_key = {id_key(q): row for q, row in zip(split_question_ids, aligned) if row is not None}
        test_keys = {id_key(q) for q in test_question_ids}
        outside = [id_key(q) for q in split_question_ids if id_key(q) not in test_keys]
        if outside:
            print(
                f"[vqav2] WARNING: {len(outside)} split questions are not in the test2015 list",
                file=sys.stderr,
            )
    else:
        by_key = dict(index_answers(answers, report))
        test_keys = {id_key(q) for q in test_question_ids}
        report.unmatched.extend(k for k in by_key if k not in test_keys)
        report.n_expected = len(by_key)
    out = []
    for qid in test_question_ids:
        row = by_key.get(id_key(qid))
        out.append({"question_id": qid, "answer": normalize_answer(answer_text(row)) if row else ""})
    report.n_written = len(out)
    n_blank = len(out) - sum(1 for q in test_question_ids if id_key(q) in by_key)
    print(f'[vqav2] {len(out)} test2015 questions written, {n_blank} of them without an answer ("")')
    return out, report


def _vqav2_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", default="./playground/data/eval/vqav2")
    p.add_argument("--ckpt", required=True, help="experiment name (answers/<split>/<ckpt>/merge.jsonl)")
    p.add_argument("--split", required=True, help="e.g. llava_vqav2_mscoco_test-dev2015")
    p.add_argument("--src", default=None, help="override: answer jsonl")
    p.add_argument("--test-file", default=None, help="override: full test2015 question jsonl")
    p.add_argument(
        "--split-file", default=None, help="override: question jsonl of the split (<dir>/<split>.jsonl)"
    )
    p.add_argument("--dst", default=None, help="override: output json")


def _vqav2_run(a: argparse.Namespace) -> JoinReport:
    src = a.src or os.path.join(a.dir, "answers", a.split, a.ckpt, "merge.jsonl")
    test_file = a.test_file or os.path.join(a.dir, "llava_vqav2_mscoco_test2015.jsonl")
    split_file = a.split_file or os.path.join(a.dir, f"{a.split}.jsonl")
    dst = a.dst or os.path.join(a.dir, "answers_upload", a.split, f"{a.ckpt}.json")
    test_ids = [q["question_id"] for q in read_jsonl(test_file, "question")]
    split_ids = None
    if os.path.isfile(split_file):
        split_ids = [q["question_id"] for q in read_jsonl(split_file, "question")]
    else:
        print(
            f"[vqav2] {split_file} not found: missing answers within the split cannot be counted",
            file=sys.stderr,
        )
    out, report = convert_vqav2(read_jsonl(src), test_ids, split_ids)
    _write_json(out, dst)
    return report


# --------------------------------------------------------------------------------------------------------------
# VizWiz: EvalAI submission [{"image", "answer"}].
# --------------------------------------------------------------------------------------------------------------


def convert_vizwiz(
    answers: Sequence[Mapping[str, Any]], questions: Sequence[Mapping[str, Any]]
) -> tuple[list[dict[str, Any]], JoinReport]:
    """One `{image, answer}` per test question, EvalAI-normalised; unanswered questions get ""."""
    report = JoinReport("vizwiz")
    aligned = join_answers([q["question_id"] for q in questions], answers, report)
    out = [
        {"image": q["image"], "answer": normalize_answer(answer_text(row)) if row else ""}
        for q, row in zip(questions, aligned)
    ]
    report.n_written = len(out)
    return out, report


def _vizwiz_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--annotation-file", required=True, help="question jsonl (llava_test.jsonl)")
    p.add_argument("--result-file", required=True)
    p.add_argument("--result-upload-file", required=True)


def _vizwiz_run(a: argparse.Namespace) -> JoinReport:
    out, report = convert_vizwiz(read_jsonl(a.result_file), read_jsonl(a.annotation_file, "question"))
    _write_json(out, a.result_upload_file)
    return report


# --------------------------------------------------------------------------------------------------------------
# MMBench / MMBench-CN: xlsx for the OpenCompass server.
# --------------------------------------------------------------------------------------------------------------

# Dropped like LLaVA does: the base64 image exceeds an xlsx cell, the rest is metadata the server ignores.
MMBENCH_DROPPED_COLUMNS = ("hint", "category", "source", "image", "comment", "l2-category")


def convert_mmbench(answers: Sequence[Mapping[str, Any]], table: Any) -> tuple[Any, JoinReport]:
    """The TSV's rows (a pandas DataFrame) with a `prediction` column after the option columns.

    With `--all-rounds` answers (one per option rotation, `round_id`), round 0 is used: the server rotates
    the options itself, and later rounds answer rotated options.
    """
    report = JoinReport("mmbench")
    first_round = [r for r in answers if int(r.get("round_id", 0) or 0) == 0]
    n_later = len(answers) - len(first_round)
    if n_later:
        print(f"[mmbench] ignoring {n_later} answers of later option rotations (round_id > 0)")
    aligned = join_answers(list(table["index"]), first_round, report)
    df = table.drop(columns=[c for c in MMBENCH_DROPPED_COLUMNS if c in table.columns])
    options = [c for c in "ABCDEFGHIJ" if c in df.columns]
    pos = df.columns.get_loc(options[-1]) + 1 if options else len(df.columns)
    df.insert(pos, "prediction", [answer_text(row) if row else "" for row in aligned])
    report.n_written = len(df)
    return df, report


def _mmbench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--annotation-file", required=True, help="mmbench_dev_20230712.tsv / mmbench_dev_cn_*.tsv")
    p.add_argument("--result-dir", required=True)
    p.add_argument("--upload-dir", required=True)
    p.add_argument("--experiment", required=True)


def _mmbench_run(a: argparse.Namespace) -> JoinReport:
    import pandas as pd

    table = pd.read_table(a.annotation_file)
    df, report = convert_mmbench(read_jsonl(os.path.join(a.result_dir, f"{a.experiment}.jsonl")), table)
    os.makedirs(a.upload_dir, exist_ok=True)
    df.to_excel(os.path.join(a.upload_dir, f"{a.experiment}.xlsx"), index=False, engine="openpyxl")
    return report


# --------------------------------------------------------------------------------------------------------------
# SEED-Bench: {"question_id", "prediction"} jsonl, plus accuracy per question type (image / video / all).
# --------------------------------------------------------------------------------------------------------------


def seed_accuracy(
    answers_by_id: Mapping[str, Mapping[str, Any]],
    questions: Sequence[Mapping[str, Any]],
    type_names: Mapping[Any, str],
    data_type: str | None = None,
) -> dict[str, float]:
    """Exact-match accuracy (%) per question type and in total; missing / error answers count as wrong."""
    counts: dict[str, int] = defaultdict(int)
    correct: dict[str, int] = defaultdict(int)
    for q in questions:
        if data_type is not None and q.get("data_type") != data_type:
            continue
        name = type_names.get(q["question_type_id"], str(q["question_type_id"]))
        counts[name] += 1
        row = answers_by_id.get(id_key(q["question_id"]))
        if row is not None and answer_text(row) == q["answer"]:
            correct[name] += 1
    out = {name: 100.0 * correct[name] / counts[name] for name in sorted(counts)}
    total = sum(counts.values())
    out["total"] = 100.0 * sum(correct.values()) / total if total else 0.0
    return out


def convert_seed(
    answers: Sequence[Mapping[str, Any]], annotation: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, dict[str, float]], JoinReport]:
    """Upload rows for every SEED question ("" when unanswered) and the accuracies (all / image / video)."""
    report = JoinReport("seed")
    questions = annotation["questions"]
    aligned = join_answers([q["question_id"] for q in questions], answers, report)
    type_names = {v: k for k, v in annotation.get("question_type", {}).items()}
    by_id = {id_key(q["question_id"]): row for q, row in zip(questions, aligned) if row is not None}
    acc = {
        "all": seed_accuracy(by_id, questions, type_names),
        "image": seed_accuracy(by_id, questions, type_names, "image"),
        "video": seed_accuracy(by_id, questions, type_names, "video"),
    }
    out = [
        {"question_id": q["question_id"], "prediction": answer_text(row) if row else ""}
        for q, row in zip(questions, aligned)
    ]
    report.n_written = len(out)
    return out, acc, report


def _seed_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--annotation-file", required=True, help="SEED-Bench.json")
    p.add_argument("--result-file", required=True)
    p.add_argument("--result-upload-file", required=True)


def _seed_run(a: argparse.Namespace) -> JoinReport:
    with open(a.annotation_file, encoding="utf-8") as f:
        annotation = json.load(f)
    out, acc, report = convert_seed(read_jsonl(a.result_file), annotation)
    for name, value in acc["all"].items():
        if name != "total":
            print(f"{name}: {value:.2f}%")
    print(f"Total accuracy: {acc['all']['total']:.2f}%")
    print(f"image accuracy: {acc['image']['total']:.2f}%")
    print(f"video accuracy: {acc['video']['total']:.2f}%")
    _write_jsonl(out, a.result_upload_file)
    return report


# --------------------------------------------------------------------------------------------------------------
# MM-Vet: {"v1_<question_id>": answer} for the official GPT-4 grader.
# --------------------------------------------------------------------------------------------------------------


def convert_mmvet(
    answers: Sequence[Mapping[str, Any]], question_ids: Sequence[Any] | None = None
) -> tuple[dict[str, str], JoinReport]:
    """Answers keyed "v1_<question_id>"; with `question_ids`, unanswered questions get ""."""
    report = JoinReport("mmvet")
    if question_ids is None:
        by_id = index_answers(answers, report)
        report.n_expected = len(by_id)
        out = {f"v1_{k}": answer_text(row) for k, row in by_id.items()}
    else:
        aligned = join_answers(question_ids, answers, report)
        out = {f"v1_{id_key(q)}": answer_text(row) if row else "" for q, row in zip(question_ids, aligned)}
    report.n_written = len(out)
    return out, report


def _mmvet_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--src", required=True)
    p.add_argument("--dst", required=True)
    p.add_argument(
        "--question-file", default=None, help='question jsonl; when given, unanswered questions get ""'
    )


def _mmvet_run(a: argparse.Namespace) -> JoinReport:
    qids = [q["question_id"] for q in read_jsonl(a.question_file, "question")] if a.question_file else None
    out, report = convert_mmvet(read_jsonl(a.src), qids)
    _write_json(out, a.dst, indent=2)
    return report


# --------------------------------------------------------------------------------------------------------------
# MME: per-category "image\tquestion\tground_truth\tprediction" files for the official eval_tool/calculation.py.
# --------------------------------------------------------------------------------------------------------------


def _squash(text: str) -> str:
    return " ".join(text.split())


def load_mme_ground_truth(data_path: PathLike) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """{(category, qa_file_stem): [(question, answer), ...]} from MME_Benchmark_release_version."""
    gt: dict[tuple[str, str], list[tuple[str, str]]] = {}
    root = Path(data_path)
    for category_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        qa_dir = category_dir / "questions_answers_YN"
        if not qa_dir.is_dir():
            qa_dir = category_dir
        for qa_file in sorted(qa_dir.glob("*.txt")):
            pairs = []
            for line in qa_file.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    question, answer = line.rstrip("\n").split("\t")
                    pairs.append((question.strip(), answer.strip()))
            gt[(category_dir.name, qa_file.stem)] = pairs
    return gt


def _mme_question(prompt: str) -> str:
    return _squash(prompt.replace(SHORT_ANSWER_PROMPT, ""))


def _mme_split_id(question_id: str) -> tuple[str, str, str]:
    """ "artwork/images/10002.jpg" -> ("artwork", "10002", "10002.jpg")."""
    parts = question_id.split("/")
    return parts[0], os.path.splitext(parts[-1])[0], parts[-1]


def convert_mme(
    answers: Sequence[Mapping[str, Any]], ground_truth: Mapping[tuple[str, str], list[tuple[str, str]]]
) -> tuple[dict[str, list[tuple[str, str, str, str]]], JoinReport]:
    """Rows per category for calculation.py; answers join GT on (category, image stem, question text with
    whitespace squashed). Unanswered GT questions get an empty prediction (scored as wrong), never dropped."""
    report = JoinReport("mme")
    keys: dict[tuple[str, str, str], tuple[str, str]] = {}
    for (category, stem), pairs in ground_truth.items():
        for question, answer in pairs:
            keys[(category, stem, _squash(question))] = (question, answer)
    report.n_expected = len(keys)
    preds: dict[tuple[str, str, str], tuple[str, str]] = {}
    for row in answers:
        category, stem, image = _mme_split_id(str(row["question_id"]))
        key = (category, stem, _mme_question(str(row.get("prompt", ""))))
        label = f"{row['question_id']}|{key[2]}"
        if key not in keys:
            # The question file may lack the yes/no instruction the GT carries.
            alt = (category, stem, _squash(key[2] + " Please answer yes or no."))
            if alt in keys:
                key = alt
            else:
                report.unmatched.append(label)
                continue
        if key in preds:
            report.duplicates.append(label)
            continue
        if answer_error(row):
            report.errors.append(label)
        # Tabs and newlines would break calculation.py's line format.
        preds[key] = (image, _squash(answer_text(row)))
    rows: dict[str, list[tuple[str, str, str, str]]] = defaultdict(list)
    for (category, stem, squashed), (question, answer) in keys.items():
        if (category, stem, squashed) in preds:
            image, pred = preds[(category, stem, squashed)]
        else:
            report.missing.append(f"{category}/{stem}|{squashed}")
            image, pred = stem, ""
        rows[category].append((image, question, answer, pred))
    report.n_written = sum(len(v) for v in rows.values())
    return dict(rows), report


def _mme_image_names(data_path: PathLike) -> dict[tuple[str, str], str]:
    names: dict[tuple[str, str], str] = {}
    for category_dir in Path(data_path).iterdir():
        if not category_dir.is_dir():
            continue
        image_dir = category_dir / "images" if (category_dir / "images").is_dir() else category_dir
        for img in image_dir.iterdir():
            if img.suffix.lower() in {".jpg", ".jpeg", ".png"}:
                names[(category_dir.name, img.stem)] = img.name
    return names


def write_mme(rows: Mapping[str, Sequence[tuple[str, str, str, str]]], result_dir: PathLike) -> None:
    """One `<category>.txt` per category in `result_dir`."""
    os.makedirs(result_dir, exist_ok=True)
    for category, cat_rows in rows.items():
        with open(os.path.join(result_dir, f"{category}.txt"), "w", encoding="utf-8") as f:
            for row in cat_rows:
                f.write("\t".join(row) + "\n")


def _mme_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", required=True, help="answers/<experiment>.jsonl")
    p.add_argument("--data-path", default="MME_Benchmark_release_version")
    p.add_argument("--answers-dir", default="answers")
    p.add_argument("--result-dir", default=None, help="default: eval_tool/answers/<experiment>")


def _mme_run(a: argparse.Namespace) -> JoinReport:
    gt = load_mme_ground_truth(a.data_path)
    rows, report = convert_mme(read_jsonl(os.path.join(a.answers_dir, f"{a.experiment}.jsonl")), gt)
    names = _mme_image_names(a.data_path)
    for category, cat_rows in rows.items():
        rows[category] = [(names.get((category, os.path.splitext(r[0])[0]), r[0]), *r[1:]) for r in cat_rows]
    write_mme(rows, a.result_dir or os.path.join("eval_tool", "answers", a.experiment))
    return report


# --------------------------------------------------------------------------------------------------------------
# CLI: python -m llava.eval.convert <benchmark> [flags]
# --------------------------------------------------------------------------------------------------------------

BENCHMARKS: dict[
    str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], JoinReport], str]
] = {
    "gqa": (_gqa_args, _gqa_run, "GQA testdev predictions json for the official eval.py"),
    "vqav2": (_vqav2_args, _vqav2_run, "VQAv2 EvalAI submission json"),
    "vizwiz": (_vizwiz_args, _vizwiz_run, "VizWiz EvalAI submission json"),
    "mmbench": (_mmbench_args, _mmbench_run, "MMBench / MMBench-CN xlsx for the OpenCompass server"),
    "seed": (_seed_args, _seed_run, "SEED-Bench upload jsonl (+ accuracy)"),
    "mmvet": (_mmvet_args, _mmvet_run, "MM-Vet json for the official grader"),
    "mme": (_mme_args, _mme_run, "MME per-category txt files for eval_tool/calculation.py"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llava.eval.convert", description=__doc__)
    sub = parser.add_subparsers(dest="benchmark", required=True)
    for name, (add_args, _, help_text) in BENCHMARKS.items():
        add_args(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: Sequence[str] | None = None) -> JoinReport:
    """Run one converter; prints what was written and every gap (missing / error / unmatched / duplicate)."""
    args = build_parser().parse_args(argv)
    report = BENCHMARKS[args.benchmark][1](args)
    report.print()
    return report


if __name__ == "__main__":
    main()
