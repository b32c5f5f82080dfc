"""Self-questioning quality: is a generated question well-formed (in the grammar) and grounded (in its scene)?"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .grammar import QTYPES, GrammarError, answer, grounded, normalize, parse
from .scene import Scene

# The acceptance bar for a self-questioning model over 50 images (distinct questions and type coverage keep
# one safe question asked everywhere from passing).
BAR = {"well_formed": 0.95, "grounded": 0.70, "distinct": 15, "types": 4}


@dataclasses.dataclass(frozen=True)
class Verdict:
    """`answer` is the exact answer whenever the scene determines one (existence/count probes always have one;
    definite questions need their phrases to denote exactly one object), else None."""

    well_formed: bool
    grounded: bool
    qtype: str | None
    answer: str | None = None


def judge_question(text: str, scene: Scene) -> Verdict:
    """Well-formed: parses with the generator's grammar after normalisation (case, spaces, trailing '?', the
    short-answer suffix, `</s>`). Grounded: see `grammar.grounded` (definite phrases must denote an object;
    existence/count probes may only mention attributes the scene shows). Ill-formed questions are not grounded."""
    try:
        q = parse(text)
    except GrammarError:
        return Verdict(False, False, None)
    return Verdict(True, grounded(q, scene), q.qtype, answer(q, scene))


def score_questions(items: Iterable[tuple[Sequence[str], Scene]]) -> dict:
    """Aggregate verdicts over (questions, scene) pairs.

    Returns shares `well_formed`, `grounded` (of all questions), `answerable` (grounded with a determinate answer),
    `distinct` (distinct normalised texts of well-formed questions), `distinct_all`, `types` (sorted covered
    qtypes), `n_types`, `per_type` counts, `grounded_per_type`, `n_questions`, `n_images`, and `meets_bar`.
    """
    n = n_images = wf = gr = ans = 0
    per_type: Counter = Counter()
    grounded_per_type: Counter = Counter()
    distinct: set[str] = set()
    distinct_all: set[str] = set()
    for questions, scene in items:
        n_images += 1
        for text in questions:
            n += 1
            v = judge_question(text, scene)
            distinct_all.add(normalize(text))
            if not v.well_formed:
                continue
            wf += 1
            distinct.add(normalize(text))
            per_type[v.qtype] += 1
            if v.grounded:
                gr += 1
                grounded_per_type[v.qtype] += 1
                ans += v.answer is not None
    share = (lambda k: k / n) if n else (lambda k: 0.0)
    metrics = {
        "n_images": n_images,
        "n_questions": n,
        "well_formed": share(wf),
        "grounded": share(gr),
        "answerable": share(ans),
        "distinct": len(distinct),
        "distinct_all": len(distinct_all),
        "types": sorted(per_type, key=QTYPES.index),
        "n_types": len(per_type),
        "per_type": {t: per_type[t] for t in QTYPES if per_type[t]},
        "grounded_per_type": {t: grounded_per_type[t] for t in QTYPES if per_type[t]},
    }
    metrics["meets_bar"] = meets_bar(metrics)
    return metrics


def meets_bar(metrics: dict, bar: dict | None = None) -> bool:
    """The acceptance bar (defaults to `BAR`): shares, distinct well-formed questions and type coverage."""
    bar = bar or BAR
    return (metrics["well_formed"] >= bar["well_formed"] and metrics["grounded"] >= bar["grounded"]
            and metrics["distinct"] >= bar["distinct"] and metrics["n_types"] >= bar["types"])


def score_answer_rows(rows: Sequence[Mapping[str, Any]], scenes: Mapping[str, Scene], n_examples: int = 6) -> dict:
    """`score_questions` over `visual_sq` answer rows ({"image", "questions", "description"}) whose images have a
    scene record; rows of other images are counted in `n_unjudged`, never silently dropped."""
    judged = [r for r in rows if r.get("image") in scenes]
    metrics = score_questions([(list(r.get("questions") or []), scenes[r["image"]]) for r in judged])
    metrics["n_unjudged"] = len(rows) - len(judged)
    metrics["examples"] = [{"image": r["image"], "description": r.get("description", ""),
                            "questions": list(r.get("questions") or [])} for r in judged[:n_examples]]
    return metrics
