"""ScienceQA scorer: parse the option letter from each answer, accuracy overall and on the IMG subset."""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from llava.eval.answer_file import JoinReport, answer_error, answer_text, id_key, index_answers, read_jsonl

OPTIONS = ("A", "B", "C", "D", "E")
FAILED = "FAILED"
_LEADING_LETTER = re.compile(r"^\(?([A-Z])(?:[.):]\s|[.)]?$)")
_ANSWER_IS = re.compile(r"The answer is \(?([A-Z])\b")


def parse_option_letter(text: str, n_choices: int, options: Sequence[str] = OPTIONS) -> str:
    """The chosen letter, or "FAILED".

    Accepted (as in LLaVA, plus the bare "A." form): "A", "A.", "A. text", "(A)", "The answer is A." /
    "The answer is A" (exactly one such statement). The letter must name one of the question's choices.
    """
    valid = set(options[:n_choices])
    pred = text.replace("\n", ". ").strip()
    letter: str | None = None
    if pred in valid:
        letter = pred
    else:
        match = _LEADING_LETTER.match(pred)
        if match:
            letter = match.group(1)
        else:
            found = set(_ANSWER_IS.findall(pred))
            if len(found) == 1:
                letter = found.pop()
    return letter if letter in valid else FAILED


def _has_image(problem: Mapping[str, Any], pred: Mapping[str, Any] | None) -> bool:
    if "image" in problem:
        return bool(problem["image"])
    return pred is not None and "<image>" in str(pred.get("prompt", ""))


def eval_science_qa(
    problems: Mapping[str, Mapping[str, Any]],
    split_ids: Sequence[str],
    answers: Sequence[Mapping[str, Any]],
    options: Sequence[str] = OPTIONS,
    report: JoinReport | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(analysis, summary): per-question records split into correct / incorrect, and
    {acc, correct, count, img_acc, img_correct, img_count, results, outputs} (accuracies in %).

    Missing answers, error rows and unparseable answers all count as wrong ("FAILED") and are reported.
    The IMG subset is the questions whose problem has an image (problems.json `image`).
    """
    report = report if report is not None else JoinReport("science_qa")
    by_id = index_answers(answers, report)
    expected = {id_key(i) for i in split_ids}
    report.n_expected = len(split_ids)
    report.unmatched.extend(k for k in by_id if k not in expected)
    report.errors[:] = [k for k in report.errors if k in expected]
    analysis: dict[str, list[dict[str, Any]]] = {"correct": [], "incorrect": []}
    results: dict[str, int] = {}
    outputs: dict[str, str] = {}
    n_failed = 0
    for prob_id in split_ids:
        prob = problems[prob_id]
        pred = by_id.get(id_key(prob_id))
        if pred is None:
            report.missing.append(id_key(prob_id))
        pred_text = answer_text(pred) if pred is not None else FAILED
        letter = parse_option_letter(pred_text, len(prob["choices"]), options) if pred is not None else FAILED
        n_failed += letter == FAILED
        pred_idx = options.index(letter) if letter != FAILED else -1
        record = {
            "question_id": prob_id,
            "parsed_ans": letter,
            "ground_truth": options[prob["answer"]],
            "question": pred.get("prompt", "Unknown") if pred is not None else "Unknown",
            "pred": pred_text,
            "is_multimodal": _has_image(prob, pred),
        }
        if pred is not None and answer_error(pred):
            record["error"] = answer_error(pred)
        results[prob_id] = pred_idx
        outputs[prob_id] = pred_text
        analysis["correct" if pred_idx == prob["answer"] else "incorrect"].append(record)
    report.n_written = len(split_ids) - len(report.missing)
    correct, total = len(analysis["correct"]), len(split_ids)
    img_correct = sum(r["is_multimodal"] for r in analysis["correct"])
    img_total = img_correct + sum(r["is_multimodal"] for r in analysis["incorrect"])
    summary = {
        "acc": 100.0 * correct / total if total else 0.0,
        "correct": correct,
        "count": total,
        "img_acc": 100.0 * img_correct / img_total if img_total else 0.0,
        "img_correct": img_correct,
        "img_count": img_total,
        "n_failed_parse": n_failed,
        "report": report.as_dict(),
        "results": results,
        "outputs": outputs,
    }
    return analysis, summary


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m llava.eval.eval_science_qa", description=__doc__)
    parser.add_argument("--base-dir", required=True, help="folder with problems.json and pid_splits.json")
    parser.add_argument("--result-file", required=True, help="answer jsonl")
    parser.add_argument(
        "--output-file", required=True, help="per-question analysis json (correct / incorrect)"
    )
    parser.add_argument("--output-result", required=True, help="summary json (acc, results, outputs)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--options", nargs="+", default=list(OPTIONS))
    args = parser.parse_args(argv)

    with open(os.path.join(args.base_dir, "pid_splits.json"), encoding="utf-8") as f:
        split_ids = json.load(f)[args.split]
    with open(os.path.join(args.base_dir, "problems.json"), encoding="utf-8") as f:
        problems = json.load(f)
    report = JoinReport("science_qa")
    analysis, summary = eval_science_qa(
        problems, split_ids, read_jsonl(args.result_file), args.options, report
    )
    print(
        f"Total: {summary['count']}, Correct: {summary['correct']}, Accuracy: {summary['acc']:.2f}%, "
        f"IMG-Accuracy: {summary['img_acc']:.2f}% ({summary['img_correct']}/{summary['img_count']}), "
        f"unparseable answers: {summary['n_failed_parse']}"
    )
    report.print()
    for path, obj in ((args.output_file, analysis), (args.output_result, summary)):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2)
    return summary


if __name__ == "__main__":
    main()
