"""VQA/EvalAI answer normalisation and the leave-one-out VQA soft accuracy (TextVQA, VQAv2, VizWiz)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

# Canonical contractions of the EvalAI table. The table's keys are these words with exactly one apostrophe
# removed ("couldn't've" -> "couldnt've", "couldn'tve"); such a key is rewritten to its canonical form.
_CANONICAL_CONTRACTIONS = (
    "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't "
    "he'd he'd've he's how'd how'll how's isn't it'd it'd've it'll ma'am mightn't mightn't've might've "
    "mustn't must've needn't not've o'clock oughtn't 'ow's'at shan't she'd've should've shouldn't "
    "shouldn't've somebody'd've somebody'll somebody's someone'd someone'd've someone'll someone's "
    "something'd something'd've something'll that's there'd there'd've there're there's they'd they'd've "
    "they'll they're they've 'twas wasn't we'd've we've weren't what'll what're what's what've when's "
    "where'd where's where've who'd who'd've who'll who's who've why'll why're why's won't would've "
    "wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll you're you've"
).split()


def _build_contractions() -> dict[str, str]:
    table: dict[str, str] = {}
    for word in _CANONICAL_CONTRACTIONS:
        positions = [i for i, ch in enumerate(word) if ch == "'"]
        for pos in positions:
            table[word[:pos] + word[pos + 1 :]] = word
    # Quirk of the published table, kept so that scores match the official evaluator: it maps the correct
    # spelling "somebody'd" to "somebodyd". (Its I-forms "Im", "Ive", "Id've" are capitalised and can never
    # match lower-cased text, so they are left out here.)
    table["somebody'd"] = "somebodyd"
    return table


CONTRACTIONS: dict[str, str] = _build_contractions()
NUMBER_WORDS: dict[str, str] = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})
# Punctuation handled by the "remove or replace by a space" rule (periods are handled separately).
PUNCTUATION = (
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
)
_DIGIT_COMMA_DIGIT = re.compile(r"(?<=\d),+(?=\d)")
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
# The official code passes re.UNICODE (= 32) where re.sub expects `count`, so at most 32 periods go.
_MAX_PERIODS_STRIPPED = 32


def _process_punctuation(text: str) -> str:
    out = text
    has_digit_comma = _DIGIT_COMMA_DIGIT.search(text) is not None
    for mark in PUNCTUATION:
        # A mark next to a space (or any text with a "1,000"-style number) is deleted; otherwise it becomes a
        # space, so "coca-cola" -> "coca cola" but "yes !" -> "yes ".
        if mark + " " in text or " " + mark in text or has_digit_comma:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=_MAX_PERIODS_STRIPPED)


def _process_digits_articles(text: str) -> str:
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES]
    return " ".join(words)


def normalize_answer(answer: str) -> str:
    """Normalise an answer the way the EvalAI VQA evaluator does ("The Dog." -> "dog", "Two" -> "2")."""
    text = answer.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return _process_digits_articles(_process_punctuation(text))


class EvalAIAnswerProcessor:
    """Callable form of `normalize_answer` (the name LLaVA's converters import)."""

    def __call__(self, answer: str) -> str:
        return normalize_answer(answer)


def answer_scores(gt_answers: Sequence[str]) -> dict[str, float]:
    """Soft score of every distinct normalised human answer.

    For each of the len(gt_answers) leave-one-out subsets an answer scores min(#matches in the subset / 3, 1);
    the answer's score is the mean over subsets. With 10 humans: 4+ matches -> 1.0, 3 -> 0.9, 2 -> 0.6, 1 -> 0.3.
    """
    normalized = [normalize_answer(a) for a in gt_answers]
    if not normalized:
        return {}
    scores: dict[str, float] = {}
    n = len(normalized)
    for candidate in set(normalized):
        matches = sum(1 for a in normalized if a == candidate)
        # Leaving out one of the `matches` humans leaves matches - 1, leaving out any other leaves matches.
        total = matches * min(1.0, (matches - 1) / 3) + (n - matches) * min(1.0, matches / 3)
        scores[candidate] = total / n
    return scores


def vqa_soft_score(prediction: str, gt_answers: Sequence[str]) -> float:
    """VQA accuracy of one prediction against its human answers (0.0 when it matches none)."""
    return answer_scores(gt_answers).get(normalize_answer(prediction), 0.0)


class TextVQAAccuracyEvaluator:
    """Mean VQA soft accuracy over `{"pred_answer": str, "gt_answers": [str, ...]}` entries."""

    def eval_pred_list(self, pred_list: Iterable[Mapping[str, object]]) -> float:
        scores = [vqa_soft_score(str(e["pred_answer"]), list(e["gt_answers"])) for e in pred_list]  # type: ignore[arg-type]
        return sum(scores) / len(scores) if scores else 0.0


class STVQAAccuracyEvaluator:
    """Exact match after normalisation against any ground-truth answer."""

    def eval_pred_list(self, pred_list: Iterable[Mapping[str, object]]) -> float:
        scores = []
        for entry in pred_list:
            gts = {normalize_answer(a) for a in entry["gt_answers"]}  # type: ignore[union-attr]
            scores.append(1.0 if normalize_answer(str(entry["pred_answer"])) in gts else 0.0)
        return sum(scores) / len(scores) if scores else 0.0
