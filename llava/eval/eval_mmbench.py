"""MMBench-style scoring by exact matching: the chosen option per question (round 0), accuracy overall and per category.

    python -m llava.eval.eval_mmbench --question-file mmbench_dev.tsv --result-file answers.jsonl [--output-file F]

This is MMBench's exact-matching step only; answers it cannot decide count as wrong (the official pipeline would ask
a judge model; submit with `python -m llava.eval.convert mmbench` for the official score).
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llava.eval.answer_file import answer_text, id_key, read_jsonl
from llava.eval.model_vqa_mmbench import read_tsv
from llava.eval.short_answer import normalize_short_answer

_LETTER = re.compile(r"\s*\(?([A-D])(?:[).:]|\s*$)")  # "B", "B.", "(B)"; not the article of "A large ..."


def mmbench_choice(text: str, options: Mapping[str, str]) -> str | None:
    """MMBench's exact-matching step: a standalone option letter, else the one option whose text the answer is
    (or contains); None when neither decides (the official pipeline would then ask a judge model)."""
    m = _LETTER.match(text)
    if m and m.group(1) in options:
        return m.group(1)
    said = normalize_short_answer(text)
    exact = [k for k, v in options.items() if normalize_short_answer(v) == said]
    if len(exact) == 1:
        return exact[0]
    contained = [k for k, v in options.items() if re.search(rf"\b{re.escape(normalize_short_answer(v))}\b", said)]
    return contained[0] if len(contained) == 1 else None


def mmbench_scores(answers: Sequence[Mapping[str, Any]], tsv: Path) -> dict[str, Any]:
    """Accuracy of the chosen option (round 0), overall and per category; chance 0.25. `letter_rate` is the share
    of answers that gave an option letter, `matched_rate` the share decided at all."""
    rows = {id_key(r["index"]): r for r in read_tsv(tsv)}
    preds = {id_key(a["question_id"]): answer_text(a) for a in answers if int(a.get("round_id", 0) or 0) == 0}
    hits: dict[str, list[bool]] = defaultdict(list)
    letters = matched = 0
    for key, row in rows.items():
        text = preds.get(key, "")
        options = {c: row[c] for c in "ABCD" if row.get(c)}
        choice = mmbench_choice(text, options)
        letters += bool(_LETTER.match(text))
        matched += choice is not None
        hits[row["category"]].append(choice == row["answer"])
    total = [h for v in hits.values() for h in v]
    n = max(1, len(total))
    return {"accuracy": sum(total) / n, "chance": 0.25, "n": len(total), "letter_rate": letters / n,
            "matched_rate": matched / n, "per_category": {k: sum(v) / len(v) for k, v in sorted(hits.items())}}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m llava.eval.eval_mmbench", description=__doc__.splitlines()[0])
    p.add_argument("--question-file", "--annotation-file", dest="question_file", required=True,
                   help="MMBench TSV with index, question, A-D, answer, category")
    p.add_argument("--result-file", required=True, help="answers of python -m llava.eval.model_vqa_mmbench")
    p.add_argument("--output-file", default=None, help="write the scores here (JSON)")
    args = p.parse_args(argv)
    scores = mmbench_scores(read_jsonl(args.result_file), Path(args.question_file))
    print(f"accuracy {scores['accuracy']:.4f} on {scores['n']} questions (chance {scores['chance']}); "
          f"option letters {scores['letter_rate']:.2f}, decided {scores['matched_rate']:.2f}")
    for category, acc in scores["per_category"].items():
        print(f"  {category}: {acc:.4f}")
    if args.output_file:
        Path(args.output_file).write_text(json.dumps(scores, indent=1) + "\n")
    return scores


if __name__ == "__main__":
    main()
