"""Summarise LLaVA-Bench review files: relative score (model / reference x 100) per category and overall."""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from llava.eval.answer_file import read_jsonl


def summarize_reviews(
    reviews: Sequence[dict[str, Any]], ignore: Sequence[Any] = ()
) -> dict[str, dict[str, float]]:
    """{category: {relative, reference, model, n}} plus "all"; scores on LLaVA's printed scale (mean x 10).

    Reviews whose scores could not be parsed (tuple [-1, -1]) are left out and counted under "n_invalid".
    """
    ignored = {str(i) for i in ignore}
    pairs: dict[str, list[tuple[float, float]]] = defaultdict(list)
    invalid: dict[str, int] = defaultdict(int)
    for review in reviews:
        if str(review.get("question_id")) in ignored:
            continue
        scores = review.get("tuple", review.get("score"))
        category = review.get("category")
        if not scores or len(scores) != 2 or min(scores) < 0:
            invalid["all"] += 1
            if category:
                invalid[category] += 1
            continue
        pair = (float(scores[0]), float(scores[1]))
        if category:
            pairs[category].append(pair)
        pairs["all"].append(pair)
    out: dict[str, dict[str, float]] = {}
    for name in sorted(set(pairs) | set(invalid)):
        values = pairs.get(name, [])
        ref = sum(p[0] for p in values) / len(values) if values else 0.0
        model = sum(p[1] for p in values) / len(values) if values else 0.0
        out[name] = {
            "relative": round(100.0 * model / ref, 1) if ref else 0.0,
            "reference": round(10 * ref, 1),
            "model": round(10 * model, 1),
            "n": len(values),
            "n_invalid": invalid.get(name, 0),
        }
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    parser = argparse.ArgumentParser(prog="python -m llava.eval.summarize_gpt_review", description=__doc__)
    parser.add_argument("-d", "--dir", default=None)
    parser.add_argument("-f", "--files", nargs="*", default=None)
    parser.add_argument("-i", "--ignore", nargs="*", default=None, help="question ids to leave out")
    args = parser.parse_args(argv)

    if args.files:
        files = list(args.files)
    elif args.dir:
        files = [
            os.path.join(args.dir, x)
            for x in os.listdir(args.dir)
            if x.endswith(".jsonl") and x.startswith(("gpt4_text", "reviews_", "review_"))
        ]
    else:
        parser.error("give -f FILES or -d DIR")
    results = {}
    for path in sorted(files):
        reviews = read_jsonl(path, "review")
        summary = summarize_reviews(reviews, args.ignore or ())
        results[path] = summary
        print(os.path.basename(path).replace("gpt4_text_", "").replace(".jsonl", ""))
        print(f"{'category':<24}{'relative':>10}{'reference':>11}{'model':>8}{'n':>6}")
        for name, s in summary.items():
            print(f"{name:<24}{s['relative']:>10.1f}{s['reference']:>11.1f}{s['model']:>8.1f}{s['n']:>6}")
        if summary.get("all", {}).get("n_invalid"):
            print(
                f"WARNING: {summary['all']['n_invalid']} reviews without parseable scores were left out",
                file=sys.stderr,
            )
        n_flagged = sum(1 for r in reviews if r.get("answer2_error"))
        if n_flagged:
            print(
                f"WARNING: {n_flagged} answers were missing or errors (reviewed as empty answers)",
                file=sys.stderr,
            )
        if any(r.get("judge") == "fake" for r in reviews):
            print(
                "WARNING: reviews from the fake judge: these numbers are not a benchmark result",
                file=sys.stderr,
            )
        print("=================================")
    return results


if __name__ == "__main__":
    main()
