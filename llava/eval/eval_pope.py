"""POPE scorer: yes/no parsing as in LLaVA, then TP/FP/TN/FN, accuracy, precision, recall, F1, yes-ratio per split."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from llava.eval.answer_file import JoinReport, answer_error, id_key, index_answers, read_jsonl

LABEL_PREFIX, LABEL_SUFFIX = "coco_pope_", ".json"


def parse_yes_no(text: str) -> str:
    """LLaVA's rule exactly: keep the first sentence, drop commas, split on single spaces (so "No\nThere is" is
    one word and reads "yes", as in LLaVA's eval_pope.py); "no" if a word is No / not / no, else "yes"."""
    first = text.split(".")[0] if "." in text else text
    words = first.replace(",", "").split(" ")
    return "no" if {"No", "not", "no"} & set(words) else "yes"


def pope_metrics(preds: Sequence[str | None], labels: Sequence[str]) -> dict[str, Any]:
    """Counts and rates for one split. A None prediction (missing answer, unreadable image) is wrong: it counts
    as FN for a "yes" label and FP for a "no" label, and is left out of the yes-ratio."""
    tp = fp = tn = fn = 0
    n_yes = n_answered = 0
    for pred, label in zip(preds, labels, strict=True):
        positive = label.strip().lower() != "no"
        if pred is None:
            pred_yes = not positive
        else:
            pred_yes = pred == "yes"
            n_answered += 1
            n_yes += pred_yes
        if pred_yes and positive:
            tp += 1
        elif pred_yes:
            fp += 1
        elif positive:
            fn += 1
        else:
            tn += 1
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    total = tp + fp + tn + fn
    return {
        "n": total,
        "TP": tp,
        "FP": fp,
        "TN": tn,
        "FN": fn,
        "accuracy": (tp + tn) / total if total else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": n_yes / n_answered if n_answered else 0.0,
    }


def _labels_for_split(
    questions: Sequence[Mapping[str, Any]], label_rows: Sequence[Mapping[str, Any]], split: str
) -> list[tuple[str, str]]:
    """[(question_id key, label)] for one split.

    LLaVA's label files number questions 1..N per split while the question file numbers them across splits,
    so labels join questions by question_id only when every label id is a question of that split; otherwise
    by position within the split (the reference's own convention), checked on the question text and image.
    """
    split_ids = [id_key(q["question_id"]) for q in questions]
    by_id = {id_key(q["question_id"]): q for q in questions}
    label_ids = [id_key(r.get("question_id")) for r in label_rows]
    if all(k in by_id for k in label_ids) and len(set(label_ids)) == len(label_ids):
        pairs = list(zip(label_ids, label_rows))
    else:
        if len(label_rows) != len(questions):
            raise ValueError(
                f"POPE split {split!r}: {len(label_rows)} labels but {len(questions)} questions, and the label "
                "ids do not match the question ids; cannot join"
            )
        pairs = list(zip(split_ids, label_rows))
    out = []
    for k, row in pairs:
        q = by_id[k]
        for field in ("text", "image"):
            if field in q and field in row and str(q[field]).strip() != str(row[field]).strip():
                raise ValueError(
                    f"POPE split {split!r}: question {k} {field} {q[field]!r} != label {row[field]!r}"
                )
        out.append((k, str(row["label"])))
    return out


def eval_pope(
    answers: Sequence[Mapping[str, Any]],
    questions: Sequence[Mapping[str, Any]],
    labels: Mapping[str, Sequence[Mapping[str, Any]]],
    report: JoinReport | None = None,
) -> dict[str, Any]:
    """Score answers per split. `labels` maps split name -> rows of its coco_pope_<split>.json.

    Returns {split: metrics, ..., "mean_f1": ..., "report": {...}}; answers join questions by question_id.
    Missing answers, error rows, unmatched and duplicate answers are recorded in `report` (and in the dict).
    """
    report = report if report is not None else JoinReport("pope")
    by_id = index_answers(answers, report)
    result: dict[str, Any] = {}
    expected: set[str] = set()
    for split in sorted(labels):
        split_questions = [q for q in questions if q.get("category") == split]
        pairs = _labels_for_split(split_questions, labels[split], split)
        preds: list[str | None] = []
        for k, _ in pairs:
            expected.add(k)
            row = by_id.get(k)
            if row is None:
                report.missing.append(k)
                preds.append(None)
            elif answer_error(row):
                preds.append(None)
            else:
                preds.append(parse_yes_no(str(row.get("text", ""))))
        result[split] = pope_metrics(preds, [label for _, label in pairs])
        result[split]["n_missing"] = sum(1 for k, _ in pairs if k not in by_id)
        result[split]["n_errors"] = sum(1 for k, _ in pairs if k in by_id and answer_error(by_id[k]))
    report.n_expected = len(expected)
    report.n_written = sum(1 for k in expected if k in by_id)
    report.errors[:] = [k for k in report.errors if k in expected]
    report.unmatched.extend(k for k in by_id if k not in expected)
    splits = sorted(labels)
    result["mean_f1"] = sum(result[s]["f1"] for s in splits) / len(splits) if splits else 0.0
    result["mean_accuracy"] = sum(result[s]["accuracy"] for s in splits) / len(splits) if splits else 0.0
    result["report"] = report.as_dict()
    return result


def format_table(result: Mapping[str, Any]) -> str:
    splits = [k for k, v in result.items() if isinstance(v, dict) and "f1" in v]
    head = f"{'split':<12}{'n':>6}{'TP':>6}{'FP':>6}{'TN':>6}{'FN':>6}{'acc':>8}{'prec':>8}{'recall':>8}{'F1':>8}{'yes':>8}{'miss':>6}{'err':>5}"
    lines = [head, "-" * len(head)]
    for s in splits:
        m = result[s]
        lines.append(
            f"{s:<12}{m['n']:>6}{m['TP']:>6}{m['FP']:>6}{m['TN']:>6}{m['FN']:>6}{100 * m['accuracy']:>8.2f}"
            f"{100 * m['precision']:>8.2f}{100 * m['recall']:>8.2f}{100 * m['f1']:>8.2f}{100 * m['yes_ratio']:>8.2f}"
            f"{m['n_missing']:>6}{m['n_errors']:>5}"
        )
    lines.append(f"mean F1 over {len(splits)} splits: {100 * result['mean_f1']:.2f}")
    return "\n".join(lines)


def load_labels(annotation_dir: str) -> dict[str, list[dict[str, Any]]]:
    """{split: rows} from the coco_pope_<split>.json files (JSON lines) in `annotation_dir`."""
    labels = {}
    for name in sorted(os.listdir(annotation_dir)):
        if name.startswith(LABEL_PREFIX) and name.endswith(LABEL_SUFFIX):
            labels[name[len(LABEL_PREFIX) : -len(LABEL_SUFFIX)]] = read_jsonl(
                os.path.join(annotation_dir, name), "label"
            )
        else:
            print(f"skipping {name} (not a coco_pope_<split>.json label file)", file=sys.stderr)
    if not labels:
        raise FileNotFoundError(f"no coco_pope_<split>.json label files in {annotation_dir}")
    return labels


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m llava.eval.eval_pope", description=__doc__)
    parser.add_argument(
        "--annotation-dir", required=True, help="folder with coco_pope_{random,popular,adversarial}.json"
    )
    parser.add_argument(
        "--question-file", required=True, help="question jsonl with a `category` per question"
    )
    parser.add_argument("--result-file", required=True, help="answer jsonl")
    parser.add_argument("--output-file", default=None, help="optional json with all numbers")
    args = parser.parse_args(argv)

    report = JoinReport("pope")
    result = eval_pope(
        read_jsonl(args.result_file),
        read_jsonl(args.question_file, "question"),
        load_labels(args.annotation_dir),
        report,
    )
    print(format_table(result))
    report.print()
    if args.output_file:
        os.makedirs(os.path.dirname(os.path.abspath(args.output_file)), exist_ok=True)
        with open(args.output_file, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
