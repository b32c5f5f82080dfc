"""TextVQA scorer: join answers to the val annotations, then the VQA soft accuracy of m4c_evaluator."""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from llava.eval.answer_file import JoinReport, answer_error, answer_text, id_key, read_jsonl
from llava.eval.m4c_evaluator import vqa_soft_score

_OCR_QUESTION = re.compile(r"Question: (.*?) Short answer:", re.DOTALL)


def question_from_prompt(prompt: str) -> str:
    """The lower-cased question inside a TextVQA prompt (the layouts LLaVA's question files use).

    "<question>\\nReference OCR token: ...\\n<suffix>" -> question; "Reference OCR token: ...\\n<question>\\n..."
    -> question; "OCR tokens: ... Question: <q> Short answer:" -> q; otherwise the first line.
    """
    prompt = prompt.replace("<image>\n", "").replace("<image>", "").strip()
    if prompt.startswith("OCR tokens: "):
        match = _OCR_QUESTION.search(prompt)
        if match:
            return match.group(1).strip().lower()
    lines = prompt.split("\n")
    if lines[0].startswith("Reference OCR token:") and len(lines) > 1:
        return lines[1].strip().lower()
    return lines[0].strip().lower()


def _image_key(row: Mapping[str, Any]) -> str:
    """The answer's image id: LLaVA's TextVQA question file stores the image id as `question_id`."""
    meta = row.get("metadata") or {}
    for value in (row.get("image_id"), meta.get("image_id") if isinstance(meta, dict) else None):
        if value is not None:
            return id_key(value)
    return id_key(row.get("question_id"))


def eval_textvqa(
    answers: Sequence[Mapping[str, Any]],
    annotations: Sequence[Mapping[str, Any]],
    report: JoinReport | None = None,
) -> dict[str, Any]:
    """Mean soft accuracy over all annotated questions.

    An answer joins its annotation on (image id, lower-cased question text from the prompt), as the reference
    does, or else on the annotation's question_id. Missing answers and error rows score 0 and are reported;
    `accuracy_answered` is the mean over the questions that have a normal answer.
    """
    report = report if report is not None else JoinReport("textvqa")
    by_pair = {
        (id_key(a["image_id"]), str(a["question"]).lower().strip()): i for i, a in enumerate(annotations)
    }
    by_qid = {id_key(a["question_id"]): i for i, a in enumerate(annotations) if "question_id" in a}
    matched: dict[int, Mapping[str, Any]] = {}
    for row in answers:
        idx = by_pair.get((_image_key(row), question_from_prompt(str(row.get("prompt", "")))))
        if idx is None:
            idx = by_qid.get(id_key(row.get("question_id")))
        label = id_key(row.get("question_id"))
        if idx is None:
            report.unmatched.append(label)
            continue
        if idx in matched:
            report.duplicates.append(label)
            continue
        matched[idx] = row
        if answer_error(row):
            report.errors.append(label)
    scores = []
    answered_scores = []
    for i, ann in enumerate(annotations):
        row = matched.get(i)
        if row is None:
            report.missing.append(id_key(ann.get("question_id", i)))
            scores.append(0.0)
            continue
        score = vqa_soft_score(answer_text(row), ann["answers"]) if not answer_error(row) else 0.0
        scores.append(score)
        if not answer_error(row):
            answered_scores.append(score)
    report.n_expected = len(annotations)
    report.n_written = len(matched)
    return {
        "accuracy": sum(scores) / len(scores) if scores else 0.0,
        "accuracy_answered": sum(answered_scores) / len(answered_scores) if answered_scores else 0.0,
        "n_questions": len(annotations),
        "n_answered": len(answered_scores),
        "report": report.as_dict(),
    }


def load_annotations(path: str) -> list[dict[str, Any]]:
    """TextVQA_0.5.1_val.json (`{"data": [...]}`) or a plain list of annotation dicts."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return data["data"] if isinstance(data, dict) else data


def eval_single(annotation_file: str, result_file: str) -> dict[str, Any]:
    report = JoinReport("textvqa")
    result = eval_textvqa(read_jsonl(result_file), load_annotations(annotation_file), report)
    print(os.path.splitext(os.path.basename(result_file))[0])
    print(f"Samples: {result['n_questions']}\nAccuracy: {100 * result['accuracy']:.2f}%")
    if report.has_gaps:
        print(
            f"Accuracy over the {result['n_answered']} answered questions: {100 * result['accuracy_answered']:.2f}%"
        )
    report.print()
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    parser = argparse.ArgumentParser(prog="python -m llava.eval.eval_textvqa", description=__doc__)
    parser.add_argument("--annotation-file", required=True, help="TextVQA_0.5.1_val.json")
    parser.add_argument("--result-file", default=None, help="answer jsonl")
    parser.add_argument("--result-dir", default=None, help="score every *.jsonl in this folder")
    parser.add_argument("--output-file", default=None, help="optional json with the numbers")
    args = parser.parse_args(argv)
    if args.result_file is None and args.result_dir is None:
        parser.error("give --result-file or --result-dir")
    files = [args.result_file] if args.result_file else []
    if args.result_dir:
        files += [
            os.path.join(args.result_dir, n)
            for n in sorted(os.listdir(args.result_dir))
            if n.endswith(".jsonl")
        ]
    results = {f: eval_single(args.annotation_file, f) for f in files}
    if args.output_file:
        os.makedirs(os.path.dirname(os.path.abspath(args.output_file)), exist_ok=True)
        with open(args.output_file, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
