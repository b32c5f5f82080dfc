"""Writing ShapesWorld datasets to disk in the LLaVA / benchmark file formats the real entry points read."""

from __future__ import annotations

import base64
import csv
import io
import itertools
import json
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from llava.data.reader import read_records

from .grammar import QTYPES
from .language import (
    CAPTION_INSTRUCTIONS,
    CAPTION_PROMPT,
    DETAIL_PROMPT,
    DETAIL_PROMPTS,
    TEXT_ONLY_QA,
    describe,
    existence_probe,
    make_captions,
    make_question,
    make_questions,
    vocabulary,
    with_suffix,
)
from .render import render_scene
from .scene import POSITION_NAMES, Scene, WorldConfig, derive_seed, scene_stream

FORMAT_VERSION = 1
IMAGE_PREFIX = {"pretrain": "pt", "instruct": "it", "eval": "ev"}
POPE_SPLITS = ("random", "popular", "adversarial")
MMBENCH_COLUMNS = ("index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source",
                   "l2-category", "comment", "split")
MMBENCH_QTYPES = ("color", "shape", "count", "position")
# instruct record kinds after the fixed text-only slots; weights sum to 1. "mc" = multiple-choice turns in the
# MMBench / A-OKVQA prompt format, as in LLaVA-1.5's instruction mix (without them nothing answers with a letter).
# QA-heavy on purpose: the loss is a mean over answer tokens, and one description holds as many of them as a dozen
# short answers. With 0.51 QA / 0.24 description+QA the yes/no tokens of existence probes were ~2% of the targets
# and the tiny model never learned to look objects up (POPE at chance; docs/shapesworld.md, "What we tried").
INSTRUCT_KINDS = (("qa", 0.80), ("desc_qa", 0.10), ("mc", 0.04), ("detail", 0.03), ("caption", 0.03))
# named mixes for --instruct-mix; "description-heavy" is the earlier default (docs/shapesworld.md, "Instruction
# mixes"; the 500-step ci quickstart uses it, as it teaches reading attributes fastest)
INSTRUCT_MIXES = {
    "qa-heavy": INSTRUCT_KINDS,
    "description-heavy": (("qa", 0.51), ("desc_qa", 0.24), ("mc", 0.07), ("detail", 0.09), ("caption", 0.09)),
}
MC_SUFFIX = "Answer with the option's letter from the given choices directly."  # model_vqa_mmbench's English prompt
TEXT_ONLY_EVERY = 25  # one text-only record in 25


def _lang_rng(seed: int, stream: str, i: int) -> random.Random:
    return random.Random(derive_seed(seed, "language", stream, i))


def _human(text: str, image: bool = False) -> dict:
    return {"from": "human", "value": ("<image>\n" + text) if image else text}


def _gpt(text: str) -> dict:
    return {"from": "gpt", "value": text}


def _qa_turns(qas, first_has_image: bool) -> list[dict]:
    turns = []
    for k, qa in enumerate(qas):
        turns += [_human(qa.prompt(), image=first_has_image and k == 0), _gpt(qa.answer)]
    return turns


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1) + "\n")


def _write_jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


class _Images:
    """Renders scenes of one stream to `images/<prefix>_NNNNNN.png` and remembers the scene records."""

    def __init__(self, out: Path, config: WorldConfig, seed: int, stream: str, records: list):
        self.dir, self.config, self.stream, self.records = out / "images", config, stream, records
        self.scenes: Iterator[Scene] = scene_stream(seed, stream, config)
        self.dir.mkdir(parents=True, exist_ok=True)

    def next(self, i: int) -> tuple[str, Scene, bytes]:
        scene = next(self.scenes)
        name = f"{IMAGE_PREFIX[self.stream]}_{i:06d}.png"
        data = _png(render_scene(scene, self.config))
        (self.dir / name).write_bytes(data)
        self.records.append({"image": name, "split": self.stream, "scene": scene.to_dict()})
        return name, scene, data


def _pretrain(out: Path, config: WorldConfig, seed: int, n: int, records: list) -> list[dict]:
    images = _Images(out, config, seed, "pretrain", records)
    data = []
    for i in range(n):
        name, scene, _ = images.next(i)
        rng = _lang_rng(seed, "pretrain", i)
        data.append({"id": f"pt_{i:06d}", "image": name, "conversations": [
            _human(rng.choice(CAPTION_INSTRUCTIONS), image=True), _gpt(make_captions(scene, rng, 1)[0])]})
    return data


def parse_instruct_mix(text: str) -> tuple[tuple[str, float], ...]:
    """A name of INSTRUCT_MIXES, or 'qa=0.8,desc_qa=0.1,...' -> INSTRUCT_KINDS-style weights (every kind named
    once, weights summing to 1)."""
    if text in INSTRUCT_MIXES:
        return INSTRUCT_MIXES[text]
    known = [k for k, _ in INSTRUCT_KINDS]
    mix = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or name not in known:
            raise ValueError(f"instruct mix item {item!r}: expected a mix name {sorted(INSTRUCT_MIXES)} or "
                             f"KIND=WEIGHT items with KIND one of {known}")
        try:
            mix[name] = float(value)
        except ValueError:
            raise ValueError(f"instruct mix item {item!r}: weight {value!r} is not a number") from None
        if mix[name] < 0:
            raise ValueError(f"instruct mix item {item!r}: weights must be >= 0")
    if set(mix) != set(known):
        raise ValueError(f"instruct mix {text!r} must give every kind once: {known}")
    if abs(sum(mix.values()) - 1) > 1e-6:
        raise ValueError(f"instruct mix {text!r}: weights sum to {sum(mix.values()):g}, not 1")
    return tuple((k, mix[k]) for k in known)


def _instruct(out: Path, config: WorldConfig, seed: int, n: int, records: list,
              mix: tuple[tuple[str, float], ...] = INSTRUCT_KINDS) -> tuple[list[dict], Counter]:
    images = _Images(out, config, seed, "instruct", records)
    data, kinds = [], Counter()
    names, weights = zip(*mix)
    for i in range(n):
        rng = _lang_rng(seed, "instruct", i)
        rid = f"it_{i:06d}"
        if i % TEXT_ONLY_EVERY == TEXT_ONLY_EVERY // 2:
            pairs = rng.sample(TEXT_ONLY_QA, rng.randint(1, 3))
            turns = [t for q, a in pairs for t in (_human(with_suffix(q)), _gpt(a))]
            data.append({"id": rid, "conversations": turns})
            kinds["text"] += 1
            continue
        kind = rng.choices(names, weights)[0]
        name, scene, _ = images.next(i)
        if kind == "qa":
            # a balanced POPE-style probe opens every QA record: in the remaining questions the answer of an
            # existence question follows from its phrase, and a tiny model learns that prior instead of looking
            probe = existence_probe(scene, rng, config.colors, config.shapes)
            turns = _qa_turns([probe, *make_questions(scene, rng, n=rng.randint(1, 4))], first_has_image=True)
        elif kind == "desc_qa":
            # description first, then questions: the exact context of SQ-LLaVA's VUSER cue
            turns = [_human(DETAIL_PROMPT, image=True), _gpt(describe(scene))]
            turns += _qa_turns(make_questions(scene, rng, n=rng.randint(1, 4)), first_has_image=False)
        elif kind == "mc":
            # one multiple-choice question opens the record (the first question is never a VUSER target, so the
            # model learns to answer option lists without learning to ask them), then short questions
            mc = next(filter(None, (multiple_choice(scene, rng, q, config) for q in rng.sample(MMBENCH_QTYPES, 4))),
                      None)
            turns = []
            if mc is not None:
                question, options, letter = mc
                prompt = "\n".join([question, *(f"{c}. {o}" for c, o in zip("ABCD", options)), MC_SUFFIX])
                turns = [_human(prompt, image=True), _gpt(letter)]
            else:
                kind = "qa"
            turns += _qa_turns(make_questions(scene, rng, n=rng.randint(0 if turns else 2, 3)), not turns)
        elif kind == "detail":
            turns = [_human(rng.choice(DETAIL_PROMPTS), image=True), _gpt(describe(scene))]
        else:
            turns = [_human(CAPTION_PROMPT, image=True), _gpt(make_captions(scene, rng, 1)[0])]
        kinds[kind] += 1
        data.append({"id": rid, "image": name, "conversations": turns})
    return data, kinds


def _combo(color: str, shape: str) -> str:
    phrase = f"{color} {shape}"
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def multiple_choice(scene: Scene, rng: random.Random, qtype: str,
                    config: WorldConfig) -> tuple[str, list[str], str] | None:
    """(question, four shuffled options, letter of the right one), or None when the scene has no such question."""
    qa = make_question(scene, rng, qtype)
    if qa is None or (qtype == "position" and qa.query.cell is not None):
        # 'what is in the top left' has a phrase answer; keep MC position questions to 'where is ...'
        for _ in range(10):
            qa = make_question(scene, rng, qtype)
            if qa is not None and qa.query.cell is None:
                break
        else:
            return None
    universe = {"color": list(config.colors), "shape": list(config.shapes),
                "count": [str(k) for k in range(0, max(config.max_objects, 3) + 1)],
                "position": list(POSITION_NAMES)}[qtype]
    distractors = [u for u in universe if u != qa.answer]
    if len(distractors) < 3:
        return None
    options = [qa.answer, *rng.sample(distractors, 3)]
    rng.shuffle(options)
    return qa.question, options, "ABCD"[options.index(qa.answer)]


def _mmbench_row(index: int, scene: Scene, rng: random.Random, qtype: str, config: WorldConfig,
                 png: bytes) -> dict | None:
    mc = multiple_choice(scene, rng, qtype, config)
    if mc is None:
        return None
    question, options, letter = mc
    l2 = "finegrained_perception (cross-instance)" if qtype == "count" else "finegrained_perception (instance-level)"
    return {"index": index, "question": question, "hint": "", "A": options[0], "B": options[1],
            "C": options[2], "D": options[3], "answer": letter, "category": qtype,
            "image": base64.b64encode(png).decode(), "source": "shapesworld", "l2-category": l2, "comment": "",
            "split": "dev"}


def _eval(out: Path, config: WorldConfig, seed: int, n: int, records: list, vqa_per_image: int,
          pope_per_image: int) -> dict:
    images = _Images(out, config, seed, "eval", records)
    rendered = [images.next(i) for i in range(n)]
    ev = out / "eval"
    counts: dict = {}

    # short-answer VQA, question types balanced by round robin over what each scene supports
    questions, answers, qtype_cycle = [], [], itertools.cycle(QTYPES)
    for i, (name, scene, _) in enumerate(rendered):
        rng, seen = _lang_rng(seed, "eval-vqa", i), set()
        for _ in range(vqa_per_image):
            for _attempt in range(len(QTYPES)):
                qa = make_question(scene, rng, next(qtype_cycle))
                if qa is not None and qa.question not in seen:
                    break
            else:
                continue
            seen.add(qa.question)
            qid = len(questions)
            questions.append({"question_id": qid, "image": name, "text": qa.prompt(), "category": qa.qtype})
            answers.append({"question_id": qid, "answer": qa.answer, "category": qa.qtype})
    _write_jsonl(ev / "vqa" / "questions.jsonl", questions)
    _write_jsonl(ev / "vqa" / "answers.jsonl", answers)
    counts["vqa"] = dict(Counter(q["category"] for q in questions))

    # POPE: objects are colour+shape combos; popular negatives are the most frequent combos of the eval set
    combos = [(c, s) for c in config.colors for s in config.shapes]
    freq = Counter((o.color, o.shape) for _, scene, _ in rendered for o in scene.objects)
    by_popularity = sorted(combos, key=lambda cs: (-freq[cs], combos.index(cs)))
    pope_q, labels = [], {s: [] for s in POPE_SPLITS}
    for i, (name, scene, _) in enumerate(rendered):
        rng = _lang_rng(seed, "eval-pope", i)
        present = sorted({(o.color, o.shape) for o in scene.objects})
        absent = [cs for cs in combos if cs not in present]
        for split in POPE_SPLITS:
            positives = rng.sample(present, min(pope_per_image, len(present)))
            if split == "random":
                negatives = rng.sample(absent, len(positives))
            elif split == "popular":
                negatives = [cs for cs in by_popularity if cs not in present][: len(positives)]
            else:
                near = [cs for cs in absent if any(cs[0] == p[0] or cs[1] == p[1] for p in present)]
                negatives = rng.sample(near, len(positives))
            pairs = [(cs, "yes") for cs in positives] + [(cs, "no") for cs in negatives]
            rng.shuffle(pairs)
            for (color, shape), label in pairs:
                qid = len(pope_q)
                text = f"Is there {_combo(color, shape)} in the image?"
                pope_q.append({"question_id": qid, "image": name, "text": text, "category": split})
                labels[split].append({"question_id": qid, "image": name, "text": text, "label": label})
    _write_jsonl(ev / "pope" / "questions.jsonl", pope_q)
    for split in POPE_SPLITS:
        _write_jsonl(ev / "pope" / f"coco_pope_{split}.json", labels[split])
    counts["pope"] = {s: len(v) for s, v in labels.items()}

    # captions: one prompt per image, five references keyed by str(question_id)
    cap_q, refs = [], {}
    for i, (name, scene, _) in enumerate(rendered):
        cap_q.append({"question_id": i, "image": name, "text": CAPTION_PROMPT})
        refs[str(i)] = make_captions(scene, _lang_rng(seed, "eval-caption", i), 5)
    _write_jsonl(ev / "caption" / "questions.jsonl", cap_q)
    _write_json(ev / "caption" / "references.json", refs)
    counts["caption"] = len(cap_q)

    # MMBench-style multiple choice, one question per image
    rows, mc_cycle = [], itertools.cycle(MMBENCH_QTYPES)
    for i, (_, scene, png) in enumerate(rendered):
        rng = _lang_rng(seed, "eval-mmbench", i)
        for _attempt in range(len(MMBENCH_QTYPES)):
            row = _mmbench_row(len(rows), scene, rng, next(mc_cycle), config, png)
            if row is not None:
                rows.append(row)
                break
    (ev / "mmbench").mkdir(parents=True, exist_ok=True)
    with open(ev / "mmbench" / "dev.tsv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=MMBENCH_COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    counts["mmbench"] = dict(Counter(r["category"] for r in rows))
    return counts


def export(out: str | Path, seed: int = 0, n_pretrain: int = 1000, n_instruct: int = 1000, n_eval: int = 200,
           config: WorldConfig | None = None, vqa_per_image: int = 3, pope_per_image: int = 2,
           instruct_mix: tuple[tuple[str, float], ...] = INSTRUCT_KINDS) -> dict:
    """Write every ShapesWorld file under `out` and return a summary (also saved as `out/world.json`).

    Three seed streams ('pretrain', 'instruct', 'eval') make the eval images held out from training images;
    item i of a stream depends only on (seed, stream, i), so changing one count never changes other files.
    """
    out, config = Path(out), config or WorldConfig()
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    pretrain = _pretrain(out, config, seed, n_pretrain, records)
    _write_json(out / "pretrain.json", pretrain)
    instruct, kinds = _instruct(out, config, seed, n_instruct, records, instruct_mix)
    _write_json(out / "instruct.json", instruct)
    eval_counts = _eval(out, config, seed, n_eval, records, vqa_per_image, pope_per_image) if n_eval else {}
    _write_jsonl(out / "scenes.jsonl", records)
    train_scenes = {json.dumps(r["scene"]["objects"]) for r in records if r["split"] != "eval"}
    summary = {
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "config": config.to_dict(),
        "counts": {"images": len(records), "pretrain": len(pretrain), "instruct": len(instruct),
                   "instruct_kinds": dict(kinds), "instruct_mix": dict(instruct_mix), "eval_images": n_eval,
                   **eval_counts},
        # same objects in the same cells as some training image (the world is finite: 432 one-object scenes)
        "eval_scenes_seen_in_training": sum(json.dumps(r["scene"]["objects"]) in train_scenes
                                            for r in records if r["split"] == "eval"),
        "prompts": {"caption_instructions": list(CAPTION_INSTRUCTIONS), "caption": CAPTION_PROMPT,
                    "detail": list(dict.fromkeys(DETAIL_PROMPTS))},
        "vocabulary": vocabulary(),
    }
    _write_json(out / "world.json", summary)
    return summary


def load_scenes(path: str | Path) -> dict[str, Scene]:
    """`scenes.jsonl` -> {image file name: Scene} (for judging questions asked about exported images)."""
    return {r["image"]: Scene.from_dict(r["scene"]) for r in read_records(path, what="scene")}

