"""Exact-match normalisation of short answers (ShapesWorld VQA, MMBench option texts); not EvalAI's VQA rules."""

from __future__ import annotations

import re

_NUMBER_WORDS = {w: str(i) for i, w in enumerate(("zero", "one", "two", "three", "four", "five", "six", "seven",
                                                   "eight", "nine"))}


def normalize_short_answer(text: str) -> str:
    """Lower case, first line, no punctuation or leading article, number words as digits."""
    text = text.strip().split("\n")[0].lower()
    text = re.sub(r"[^a-z0-9 ]", " ", text)
    words = text.split()
    if words and words[0] in ("a", "an", "the"):
        words = words[1:]
    return " ".join(_NUMBER_WORDS.get(w, w) for w in words)
