"""The closed question grammar: structured queries, their surface forms, parsing, answers and grounding."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

from llava.constants import SHORT_ANSWER_PROMPT

from .scene import ALL_COLORS, ALL_SHAPES, POSITION_NAMES, SIZES, Scene, SceneObject, position_name

QTYPES: tuple[str, ...] = ("color", "shape", "size", "count", "existence", "position", "relation")
YES_NO_QTYPES: frozenset[str] = frozenset({"existence", "relation"})

# LLaVA-1.5's short-VQA instruction; its data and eval files join it to the question with a newline.
SHORT_ANSWER_SUFFIX = SHORT_ANSWER_PROMPT

# relation word -> predicate on (subject cell, object cell)
RELATIONS: dict[str, Callable[[tuple[int, int], tuple[int, int]], bool]] = {
    "left of": lambda a, b: a[1] < b[1],
    "right of": lambda a, b: a[1] > b[1],
    "above": lambda a, b: a[0] < b[0],
    "below": lambda a, b: a[0] > b[0],
}

# form id -> (qtype, surface template). Slots: {the} definite NP, {a} indefinite NP, {many} plural NP,
# {the2} second definite NP, {rel} relation, {pos} position name.
FORMS: dict[str, tuple[str, str]] = {
    "color": ("color", "what color is {the}"),
    "color_of": ("color", "what is the color of {the}"),
    "shape": ("shape", "what shape is {the}"),
    "shape_of": ("shape", "what is the shape of {the}"),
    "size": ("size", "what size is {the}"),
    "size_or": ("size", "is {the} small or large"),
    "count": ("count", "how many {many} are there"),
    "count_in": ("count", "how many {many} are in the image"),
    "exist_in": ("existence", "is there {a} in the image"),
    "exist": ("existence", "is there {a}"),
    "where": ("position", "where is {the}"),
    "where_located": ("position", "where is {the} located"),
    "what_at": ("position", "what is in the {pos}"),
    "which_at": ("position", "which object is in the {pos}"),
    "relation": ("relation", "is {the} {rel} {the2}"),
}
FORMS_BY_QTYPE: dict[str, tuple[str, ...]] = {
    q: tuple(f for f, (t, _) in FORMS.items() if t == q) for q in QTYPES
}


@dataclasses.dataclass(frozen=True)
class Ref:
    """A noun phrase: optional size and colour, and a shape noun (None renders as 'object')."""

    shape: str | None = None
    color: str | None = None
    size: str | None = None

    def words(self) -> str:
        return " ".join(w for w in (self.size, self.color, self.shape or "object") if w)

    def plural(self) -> str:
        return " ".join(w for w in (self.size, self.color, (self.shape or "object") + "s") if w)

    def indefinite(self) -> str:
        words = self.words()
        return ("an " if words[0] in "aeiou" else "a ") + words

    def matches(self, obj: SceneObject) -> bool:
        return ((self.shape is None or obj.shape == self.shape) and (self.color is None or obj.color == self.color)
                and (self.size is None or obj.size == self.size))

    def referents(self, scene: Scene) -> list[SceneObject]:
        return [o for o in scene.objects if self.matches(o)]

    @property
    def n_attributes(self) -> int:
        return sum(x is not None for x in (self.shape, self.color, self.size))


@dataclasses.dataclass(frozen=True)
class Query:
    """A parsed question: its form (hence qtype) and the slots it fills."""

    form: str
    ref: Ref | None = None
    ref2: Ref | None = None
    relation: str | None = None
    cell: tuple[int, int] | None = None

    @property
    def qtype(self) -> str:
        return FORMS[self.form][0]

    def text(self) -> str:
        """The question as the generator writes it: capitalised, with a question mark."""
        slots = {}
        if self.ref is not None:
            slots.update(the="the " + self.ref.words(), a=self.ref.indefinite(), many=self.ref.plural())
        if self.ref2 is not None:
            slots["the2"] = "the " + self.ref2.words()
        if self.relation is not None:
            slots["rel"] = self.relation
        if self.cell is not None:
            slots["pos"] = position_name(*self.cell)
        s = FORMS[self.form][1].format(**slots)
        return s[0].upper() + s[1:] + "?"


class GrammarError(ValueError):
    """The text is not a sentence of the ShapesWorld question grammar."""


# ---------------------------------------------------------------------------------------------- parsing
def _alt(words) -> str:
    return "|".join(sorted((re.escape(w) for w in words), key=len, reverse=True))


_SIZE, _COLOR = _alt(SIZES), _alt(ALL_COLORS)
_NOUN, _NOUNS = _alt((*ALL_SHAPES, "object")), _alt([s + "s" for s in (*ALL_SHAPES, "object")])


def _np(tag: str, noun: str) -> str:
    return rf"(?:(?P<{tag}_size>{_SIZE}) )?(?:(?P<{tag}_color>{_COLOR}) )?(?P<{tag}_noun>{noun})"


_SLOT_RE = {
    "the": "the " + _np("r1", _NOUN),
    "a": "(?:a|an) " + _np("r1", _NOUN),
    "many": _np("r1", _NOUNS),
    "the2": "the " + _np("r2", _NOUN),
    "rel": f"(?P<rel>{_alt(RELATIONS)})",
    "pos": f"(?P<pos>{_alt(POSITION_NAMES)})",
}
_FORM_RE = {form: re.compile(template.format(**_SLOT_RE)) for form, (_, template) in FORMS.items()}
_SUFFIX_RE = re.compile(r"\s*" + re.escape(SHORT_ANSWER_SUFFIX.lower().rstrip(".")) + r"\.?\s*$")


def normalize(text: str) -> str:
    """Lower-case, drop `<image>`/`</s>` and the short-answer suffix, collapse spaces, strip trailing '?'/'.'."""
    t = text.replace("<image>", " ").replace("</s>", " ").lower()
    t = " ".join(t.split())
    t = _SUFFIX_RE.sub("", t)
    return t.rstrip(" ?.!").strip()


def _ref(m: re.Match, tag: str) -> Ref:
    noun = m.group(f"{tag}_noun")
    noun = noun[:-1] if noun.endswith("s") and noun[:-1] in (*ALL_SHAPES, "object") else noun
    return Ref(None if noun == "object" else noun, m.group(f"{tag}_color"), m.group(f"{tag}_size"))


def _well_typed(q: Query) -> bool:
    """Productions the grammar excludes: asking an attribute the phrase already names, trivial probes."""
    t = q.qtype
    if t == "color":
        return q.ref.color is None
    if t == "shape":
        return q.ref.shape is None
    if t == "size":
        return q.ref.size is None
    if t == "existence":
        return q.ref.n_attributes > 0
    if t == "relation":
        return q.ref != q.ref2
    return True


def parse(text: str) -> Query:
    """Parse a question (any case, spacing, trailing '?', short-answer suffix) or raise `GrammarError`."""
    t = normalize(text)
    for form, regex in _FORM_RE.items():
        m = regex.fullmatch(t)
        if m is None:
            continue
        groups = m.groupdict()
        q = Query(
            form,
            ref=_ref(m, "r1") if "r1_noun" in groups else None,
            ref2=_ref(m, "r2") if "r2_noun" in groups else None,
            relation=groups.get("rel"),
            cell=POSITION_NAMES[groups["pos"]] if groups.get("pos") else None,
        )
        if _well_typed(q):
            return q
    raise GrammarError(f"not a ShapesWorld question: {text!r}")


# ---------------------------------------------------------------------------------------------- semantics
def grounded(q: Query, scene: Scene) -> bool:
    """Does everything the question refers to exist in the scene?

    - Definite phrases ('the red circle', both sides of a relation) must denote at least one object.
    - A position ('what is in the top left') must be an occupied cell.
    - Existence and count questions are probes, so their phrase may denote nothing ('Is there a blue square?'
      -> no); they count as grounded when every attribute they mention (size, colour, shape noun) is carried
      by some object of the scene. A probe naming a colour or shape absent from the image is not grounded.
    """
    if q.qtype in ("existence", "count"):
        r = q.ref
        return ((r.shape is None or any(o.shape == r.shape for o in scene.objects))
                and (r.color is None or any(o.color == r.color for o in scene.objects))
                and (r.size is None or any(o.size == r.size for o in scene.objects)))
    if q.cell is not None:
        return scene.at(*q.cell) is not None
    return all(r is None or r.referents(scene) for r in (q.ref, q.ref2))


def object_phrase(obj: SceneObject) -> str:
    return f"{obj.size} {obj.color} {obj.shape}"


def answer(q: Query, scene: Scene) -> str | None:
    """The exact short answer, or None when the question presupposes something the scene lacks or is ambiguous."""
    t = q.qtype
    if t == "count":
        return str(len(q.ref.referents(scene)))
    if t == "existence":
        return "yes" if q.ref.referents(scene) else "no"
    if q.cell is not None:
        obj = scene.at(*q.cell)
        return object_phrase(obj) if obj else None
    found = q.ref.referents(scene)
    if len(found) != 1:
        return None
    obj = found[0]
    if t == "color":
        return obj.color
    if t == "shape":
        return obj.shape
    if t == "size":
        return obj.size
    if t == "position":
        return position_name(obj.row, obj.col)
    if t == "relation":
        other = q.ref2.referents(scene)
        if len(other) != 1 or other[0] is obj:
            return None
        return "yes" if RELATIONS[q.relation](obj.cell, other[0].cell) else "no"
    raise AssertionError(t)
