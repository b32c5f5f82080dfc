"""Generating language about a scene: questions with exact answers, caption references, detailed descriptions."""

from __future__ import annotations

import dataclasses
import itertools
import random
import re

from .grammar import (
    FORMS,
    FORMS_BY_QTYPE,
    QTYPES,
    RELATIONS,
    SHORT_ANSWER_SUFFIX,
    Query,
    Ref,
    answer,
    object_phrase,
)
from .scene import ALL_COLORS, ALL_SHAPES, COL_WORDS, ROW_WORDS, SIZES, Scene, SceneObject, position_name

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# Stage-1 caption instructions (from LLaVA's brief-description list; the `plain` template drops them anyway).
CAPTION_INSTRUCTIONS: tuple[str, ...] = (
    "Describe the image concisely.",
    "Provide a brief description of the given image.",
    "Summarize the visual content of the image.",
    "Give a short caption of the image.",
)
# The caption prompt of stage-2 caption records and of the caption benchmark (LLaVA-1.5's TextCaps prompt).
CAPTION_PROMPT = "Provide a one-sentence caption for the provided image."
# SQ-LLaVA's question-generation cue starts with this turn, so it leads most description records.
DETAIL_PROMPT = "Can you describe the image in detail?"
DETAIL_PROMPTS: tuple[str, ...] = (DETAIL_PROMPT, DETAIL_PROMPT, "Describe the image in detail.",
                                   "What do you see in this image?")

# A few image-free facts about the world's vocabulary (text-only records).
TEXT_ONLY_QA: tuple[tuple[str, str], ...] = (
    ("How many sides does a triangle have?", "3"),
    ("How many sides does a square have?", "4"),
    ("How many points does a star have?", "5"),
    ("How many corners does a diamond have?", "4"),
    ("How many corners does a circle have?", "0"),
    ("What color do you get by mixing red and yellow?", "orange"),
    ("What color do you get by mixing red and blue?", "purple"),
    ("What color do you get by mixing blue and yellow?", "green"),
    ("Which shape is round?", "circle"),
    ("Which shape has three corners?", "triangle"),
    ("What is the opposite of left?", "right"),
    ("What is the opposite of above?", "below"),
    ("What is the opposite of small?", "large"),
    ("How many cells does a three by three grid have?", "9"),
)


@dataclasses.dataclass(frozen=True)
class QA:
    """A question about a scene, its exact short answer and its type."""

    question: str
    answer: str
    qtype: str
    query: Query | None = dataclasses.field(compare=False, repr=False, default=None)

    def prompt(self, short: bool = True) -> str:
        """The question as a training/eval turn (with LLaVA-1.5's short-answer suffix when `short`)."""
        return with_suffix(self.question) if short else self.question


def with_suffix(question: str) -> str:
    return question + "\n" + SHORT_ANSWER_SUFFIX


# ---------------------------------------------------------------------------------------------- questions
def _refs(obj: SceneObject, scene: Scene, free: str | None = None, unique: bool = True) -> list[Ref]:
    """Phrases describing `obj` (never naming attribute `free`); with `unique`, only those denoting it alone."""
    out = []
    for shape, color, size in itertools.product((obj.shape, None), (obj.color, None), (obj.size, None)):
        ref = Ref(shape, color, size)
        if free is not None and getattr(ref, free) is not None:
            continue
        if not unique or ref.referents(scene) == [obj]:
            out.append(ref)
    return out


def _qa(query: Query, scene: Scene) -> QA:
    a = answer(query, scene)
    assert a is not None, query
    return QA(query.text(), a, query.qtype, query)


def _attribute_question(scene: Scene, rng: random.Random, qtype: str) -> QA | None:
    options = [(o, r) for o in scene.objects for r in _refs(o, scene, free=qtype)]
    if not options:
        return None
    _, ref = rng.choice(options)
    return _qa(Query(rng.choice(FORMS_BY_QTYPE[qtype]), ref), scene)


def _count_question(scene: Scene, rng: random.Random) -> QA | None:
    present = {Ref(*t) for o in scene.objects
               for t in itertools.product((o.shape, None), (o.color, None), (o.size, None))}
    # Zero counts only over attributes the image shows (a red object and a circle, but no red circle).
    absent = {Ref(s, c, z) for s in {*(o.shape for o in scene.objects), None}
              for c in {*(o.color for o in scene.objects), None} for z in {*(o.size for o in scene.objects), None}
              } - present
    # Pick the answer first (0 at half weight) so the count prior is not dominated by 1.
    by_count: dict[int, list[Ref]] = {0: sorted(absent, key=repr)} if absent else {}
    for ref in sorted(present, key=repr):
        by_count.setdefault(len(ref.referents(scene)), []).append(ref)
    counts = sorted(by_count)
    k = rng.choices(counts, [0.5 if c == 0 else 1.0 for c in counts])[0]
    return _qa(Query(rng.choice(FORMS_BY_QTYPE["count"]), rng.choice(by_count[k])), scene)


def _existence_question(scene: Scene, rng: random.Random) -> QA | None:
    """Yes or no with equal odds within each phrase form (which of shape, colour and size it names), so the phrase
    alone never gives the answer away. Negatives recombine attributes the image shows, so they stay grounded and
    test binding; a scene that admits no such negative gets no existence question."""
    shown = [{*(getattr(o, k) for o in scene.objects), None} for k in ("shape", "color", "size")]
    by_form: dict[tuple[bool, ...], tuple[list[Ref], list[Ref]]] = {}
    for ref in sorted((Ref(*t) for t in itertools.product(*shown)), key=repr):
        if ref.shape is None and ref.color is None:  # 'a large object' is too vague
            continue
        form = (ref.shape is not None, ref.color is not None, ref.size is not None)
        by_form.setdefault(form, ([], []))[bool(ref.referents(scene))].append(ref)
    forms = [form for form, (absent, present) in sorted(by_form.items()) if absent and present]
    if not forms:
        return None
    absent, present = by_form[rng.choice(forms)]
    return _qa(Query(rng.choice(FORMS_BY_QTYPE["existence"]), rng.choice(present if rng.random() < 0.5 else absent)),
               scene)


def _plain_existence_question(scene: Scene, rng: random.Random) -> QA | None:
    """The world's plain question stream: yes or no first, then any phrase with that answer, so 'is there a circle'
    (one shown attribute) is always yes and 'is there a small red circle' mostly no (reading only the question
    answered 0.79 of such a set, against 0.53 for always 'no'). Only the tiny foundation LM's corpus uses it
    (`llava.quickstart.foundation._turns_for` says why)."""
    attrs = [(s, c, z) for s in {*(o.shape for o in scene.objects), None}
             for c in {*(o.color for o in scene.objects), None} for z in {*(o.size for o in scene.objects), None}]
    refs = [Ref(*t) for t in attrs if Ref(*t).n_attributes > 0]
    refs = [r for r in refs if r.shape is not None or r.color is not None]  # 'a large object' is too vague
    negatives = sorted((r for r in refs if not r.referents(scene)), key=repr)
    if not negatives:
        return None
    positives = sorted((r for r in refs if r.referents(scene)), key=repr)
    pool = positives if rng.random() < 0.5 else negatives
    return _qa(Query(rng.choice(FORMS_BY_QTYPE["existence"]), rng.choice(pool)), scene)


def existence_probe(scene: Scene, rng: random.Random, colors: tuple[str, ...] = ALL_COLORS,
                    shapes: tuple[str, ...] = ALL_SHAPES) -> QA:
    """A POPE-style yes/no question ("is there a red circle"), answered yes or no with equal odds.

    Unlike `_existence_question`, negatives may name attributes the image does not show: half recombine shown
    attributes (POPE "adversarial"), half are absent from the image (POPE "random"). Such probes are not grounded
    in the judge's sense, so the generator makes them a record's first question, which SQ never turns into a VUSER
    question."""
    form = rng.choice((("color", "shape"), ("color", "shape"), ("color",), ("shape",)))
    values = {"color": colors, "shape": shapes}
    every = [Ref(**dict(zip(form, combo))) for combo in itertools.product(*(values[k] for k in form))]
    absent = [r for r in every if not r.referents(scene)]
    if rng.random() < 0.5 or not absent:
        obj = rng.choice(scene.objects)
        ref = Ref(**{k: getattr(obj, k) for k in form})
    else:
        shown = {k: {getattr(o, k) for o in scene.objects} for k in form}
        recombined = [r for r in absent if all(getattr(r, k) in shown[k] for k in form)]
        ref = rng.choice(recombined if recombined and rng.random() < 0.5 else absent)
    return _qa(Query(rng.choice(FORMS_BY_QTYPE["existence"]), ref), scene)


def _position_question(scene: Scene, rng: random.Random) -> QA | None:
    options = [r for o in scene.objects for r in _refs(o, scene)]  # empty when every object has a twin
    if not options or rng.random() < 0.3:
        obj = rng.choice(scene.objects)
        return _qa(Query(rng.choice(("what_at", "which_at")), cell=obj.cell), scene)
    return _qa(Query(rng.choice(("where", "where_located")), rng.choice(options)), scene)


def _relation_question(scene: Scene, rng: random.Random) -> QA | None:
    pairs = [(a, b) for a in scene.objects for b in scene.objects if a is not b]
    rng.shuffle(pairs)
    want = rng.random() < 0.5
    for a, b in pairs:
        ra, rb = _refs(a, scene), _refs(b, scene)
        if not ra or not rb:
            continue
        rels = [r for r, f in RELATIONS.items() if f(a.cell, b.cell) == want]
        if rels:
            return _qa(Query("relation", rng.choice(ra), rng.choice(rb), rng.choice(rels)), scene)
    return None


_MAKERS = {
    "color": lambda s, r: _attribute_question(s, r, "color"),
    "shape": lambda s, r: _attribute_question(s, r, "shape"),
    "size": lambda s, r: _attribute_question(s, r, "size"),
    "count": _count_question,
    "existence": _existence_question,
    "position": _position_question,
    "relation": _relation_question,
}


def make_question(scene: Scene, rng: random.Random, qtype: str, balanced_existence: bool = True) -> QA | None:
    """One question of type `qtype` with its exact answer, or None when the scene cannot support one;
    `balanced_existence=False` draws existence questions from the plain stream (`_plain_existence_question`)."""
    maker = _MAKERS[qtype] if balanced_existence or qtype != "existence" else _plain_existence_question
    return maker(scene, rng)


def make_questions(scene: Scene, rng: random.Random, n: int | None = None,
                   qtypes: tuple[str, ...] = QTYPES, balanced_existence: bool = True) -> list[QA]:
    """Distinct questions about the scene: one per supported type (shuffled), then more until `n` if given."""
    order = list(qtypes)
    rng.shuffle(order)
    out: list[QA] = []
    seen: set[str] = set()
    for qtype in order:
        qa = make_question(scene, rng, qtype, balanced_existence)
        if qa and qa.question not in seen:
            out.append(qa)
            seen.add(qa.question)
    if n is None:
        return out
    for _ in range(20 * n):
        if len(out) >= n:
            break
        qa = make_question(scene, rng, rng.choice(qtypes), balanced_existence)
        if qa and qa.question not in seen:
            out.append(qa)
            seen.add(qa.question)
    return out[:n]


# ---------------------------------------------------------------------------------------------- captions
_CAPTION_TEMPLATES: tuple[str, ...] = (
    "{list}",
    "{list} on a plain background",
    "an image of {list}",
    "a picture with {list}",
    "{there} {count}: {list}",
    "{list_pos}",
)
_DETAIL = ("full", "color", "size", "shape")
_DETAIL_WEIGHTS = (0.45, 0.35, 0.1, 0.1)  # mostly informative captions; some terse ones as in real references


def _phrase(obj: SceneObject, detail: str) -> str:
    words = {"full": (obj.size, obj.color), "color": (obj.color,), "size": (obj.size,), "shape": ()}[detail]
    return " ".join((*words, obj.shape))


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _count_phrase(n: int) -> tuple[str, str]:
    return ("there is", "one object") if n == 1 else ("there are", f"{NUMBER_WORDS[n]} objects")


def make_captions(scene: Scene, rng: random.Random, n: int) -> list[str]:
    """`n` different short captions (lower case, no final period), each true of the scene and naming every object."""
    out: list[str] = []
    for _ in range(40 * n):
        if len(out) >= n:
            break
        objects = list(scene.objects)
        if rng.random() < 0.5:
            rng.shuffle(objects)
        detail = rng.choices(_DETAIL, _DETAIL_WEIGHTS)[0]
        items = [_article(_phrase(o, detail)) for o in objects]
        there, count = _count_phrase(len(objects))
        caption = rng.choice(_CAPTION_TEMPLATES).format(
            list=_join(items), there=there, count=count,
            list_pos=_join([f"{it} in the {position_name(o.row, o.col)}" for it, o in zip(items, objects)]))
        if caption not in out:
            out.append(caption)
    while len(out) < n:  # tiny scenes with few phrasings: repeat rather than return short lists
        out.append(out[len(out) % max(1, len(out))])
    return out


def describe(scene: Scene) -> str:
    """The detailed description: object count, then one sentence per object in reading order, with its position."""
    there, count = _count_phrase(len(scene.objects))
    sentences = [f"{there.capitalize()} {count}."]
    for o in scene.objects:
        sentences.append(f"{_article(object_phrase(o)).capitalize()} is in the {position_name(o.row, o.col)}.")
    return " ".join(sentences)


# ---------------------------------------------------------------------------------------------- vocabulary
_WORD_RE = re.compile(r"[a-z0-9']+")


def vocabulary() -> list[str]:
    """Every lower-cased word the generator can emit in questions, answers, captions, descriptions and prompts."""
    texts = [t for _, t in FORMS.values()] + list(_CAPTION_TEMPLATES) + list(CAPTION_INSTRUCTIONS)
    texts += [CAPTION_PROMPT, *DETAIL_PROMPTS, SHORT_ANSWER_SUFFIX, "there is are a an the in object objects yes no"]
    texts += [q + " " + a for q, a in TEXT_ONLY_QA]
    texts += [*ALL_COLORS, *ALL_SHAPES, *(s + "s" for s in ALL_SHAPES), *SIZES, *ROW_WORDS, *COL_WORDS]
    texts += [*RELATIONS, *NUMBER_WORDS[1:5], *map(str, range(10)), "plain background"]
    words: set[str] = set()
    for t in texts:
        words.update(_WORD_RE.findall(re.sub(r"\{[^}]*\}", " ", t.lower())))
    return sorted(words)
