"""Self-questioning QA data generation (the reference's `visual_qa.py`): LLaVA-format training records.

For each image (a folder with --start/--end, or the "image" of each record of --question-file / --data-path) the
model, on one engine and in batches:
  1. makes the first QA pair: it describes the image ("<image>\\nCan you describe the image in detail?"), or, for a
     record of an existing LLaVA data file, the record's own first (human, gpt) pair is kept as context (--context);
  2. samples --n_shot questions, each independently from the VUSER cue after that pair
     ("USER: <image>\\n q0 ASSISTANT: a0</s>VUSER:"), with the --sq_* sampling flags (reference: temperature 1.2,
     top_k 300, top_p 0.95, up to 300 new tokens);
  3. answers every kept question ("...a0</s>VUSER: q</s> ASSISTANT:", the training format), greedy by default
     (the decoding flags),
and writes one record per image: {"id", "image", "conversations": [human "<image>\\n" + q0, gpt a0, human q1, gpt a1,
...]} (the follow-up questions are plain "human" turns: training's --sq_r makes them VUSER turns).

Generated questions are cleaned, then filtered; the summary line and the meta file count what was dropped:
  - cleaning: image markers (<image>, <im_start>, <im_end>) are removed and an appended LLaVA instruction ("Answer the
    question using a single word or phrase.", "Answer with the option's letter from the given choices directly.")
    is stripped;
  - dropped: questions that are then empty, that contain a role marker (USER:, ASSISTANT:, VUSER:) or </s>, or that
    repeat an earlier question of the same image (q0 included; compared case-, space- and end-punctuation-blind).
Answers and descriptions lose image markers and are cut at the first role marker or </s>; a question whose answer is
then empty is dropped with it. An image whose description is empty, or that cannot be read, gets an error row
({"id", "image", "error"}, no conversations) so that a rerun does not retry it; training skips such rows as
malformed, and the .json output leaves them out.

Output: JSONL, resumable like every answers file (a rerun skips the images already written; settings and counts in
<file>.meta.json). An output named *.json is a JSON list written at the end from the resumable <file>.rows.jsonl
(kept, with its meta file, so that a rerun resumes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from llava.constants import (
    ANSWER_FORMAT_INSTRUCTIONS,
    DEFAULT_IM_END_TOKEN,
    DEFAULT_IM_START_TOKEN,
    DEFAULT_IMAGE_TOKEN,
)
from llava.eval import cli_common as cc
from llava.eval.answer_file import id_key, read_jsonl
from llava.eval.visual_sq import list_images
from llava.inference import flags
from llava.inference.engine import InferenceEngine, Request
from llava.inference.self_questioning import SQContext, SQSettings, context_conversation

# ---------------------------------------------------------------------- defaults
# Answers (and the description) are greedy; long enough not to cut a detailed answer (the demo's 1024).
ANSWERING = flags.BENCHMARK.replace(max_new_tokens=1024)
# The reference's question sampling (docs/reference.md#question-generation): temperature 1.2, top_k 300, top_p 0.95, up to 300 new tokens.
QUESTION_SAMPLING = flags.SQDefaults(n_shot=3, temperature=1.2, top_p=0.95, top_k=300, max_new_tokens=300,
                                     answer_flag=False)
CONTEXT_MODES = ("auto", "describe")

# ---------------------------------------------------------------------- the question filter
ROLE_MARKERS = ("USER:", "ASSISTANT:", "VUSER:", "</s>")
IMAGE_MARKERS = (DEFAULT_IM_START_TOKEN, DEFAULT_IM_END_TOKEN, DEFAULT_IMAGE_TOKEN)
# LLaVA-1.5's answer-format instructions; a model trained on its data may append one to a question.
_INSTRUCTION_RE = re.compile(
    "|".join(r"\s*" + re.escape(s.rstrip(".")) + r"\.?" for s in ANSWER_FORMAT_INSTRUCTIONS), re.I)
DROP_REASONS = ("empty", "role_marker", "repeat")


def _remove_image_markers(text: str) -> str:
    for marker in IMAGE_MARKERS:
        text = text.replace(marker, " ")
    return re.sub(r"[ \t]{2,}", " ", text)


def clean_question(text: str) -> str:
    """A generated question without image markers and appended answer-format instructions, stripped."""
    return _INSTRUCTION_RE.sub("", _remove_image_markers(text)).strip()


def clean_answer(text: str) -> str:
    """A generated answer (or description) without image markers, cut at the first role marker or </s>, stripped."""
    text = _remove_image_markers(text)
    cut = min((text.find(m) for m in ROLE_MARKERS if m in text), default=len(text))
    return text[:cut].strip()


def _dedup_key(question: str) -> str:
    return " ".join(question.lower().split()).rstrip(" ?.!")


def filter_questions(texts: Iterable[str], earlier: Iterable[str] = ()) -> tuple[list[str], Counter]:
    """Cleaned questions that pass, in order, and a Counter of the dropped ones by reason ("empty", "role_marker",
    "repeat"). `earlier`: questions already in the image's conversation (a repeat of one of them is dropped)."""
    seen = {_dedup_key(clean_question(q)) for q in earlier}
    kept: list[str] = []
    dropped: Counter = Counter()
    for text in texts:
        question = clean_question(text)
        if not question:
            dropped["empty"] += 1
        elif any(marker in question for marker in ROLE_MARKERS):
            dropped["role_marker"] += 1
        elif _dedup_key(question) in seen:
            dropped["repeat"] += 1
        else:
            seen.add(_dedup_key(question))
            kept.append(question)
    return kept, dropped


# ---------------------------------------------------------------------- inputs
@dataclasses.dataclass
class Item:
    """One image to make a record for; `first` is the record's own first (question, answer) pair, if used."""

    id: Any
    image: str
    first: tuple[str, str] | None = None


def first_pair(record: dict) -> tuple[str, str] | None:
    """(human question, gpt answer) of a LLaVA record's first two turns, when they are that; else None."""
    turns = record.get("conversations")
    if not isinstance(turns, list) or len(turns) < 2 or not all(isinstance(t, dict) for t in turns[:2]):
        return None
    (q, a) = turns[:2]
    roles = (str(q.get("from", "")).lower(), str(a.get("from", "")).lower())
    if roles not in {("human", "gpt"), ("user", "gpt"), ("human", "assistant"), ("user", "assistant")}:
        return None
    question, answer = q.get("value"), a.get("value")
    if not isinstance(question, str) or not isinstance(answer, str) or not question.strip() or not answer.strip():
        return None
    if question.count(DEFAULT_IMAGE_TOKEN) > 1 or DEFAULT_IMAGE_TOKEN in answer:
        return None
    if DEFAULT_IMAGE_TOKEN not in question:
        question = f"{DEFAULT_IMAGE_TOKEN}\n{question.strip()}"
    return question, answer


def items_from_args(args: argparse.Namespace) -> tuple[list[Item], int]:
    """The images to process (after --start/--end) and how many file records had no usable image."""
    if not args.question_file:
        return [Item(name, name) for name in list_images(args.image_folder)][args.start : args.end], 0
    items, no_image = [], 0
    for n, record in enumerate(cc.read_questions(args.question_file)[args.start : args.end], args.start):
        image = record.get("image") if isinstance(record, dict) else None
        if not isinstance(image, str) or not image.strip():
            no_image += 1  # text-only records (and several-image ones) have nothing to question
            continue
        first = first_pair(record) if args.context == "auto" else None
        items.append(Item(record.get("id", record.get("question_id", n)), image, first))
    return items, no_image


def unique_keys(items: Sequence[Item]) -> list[str]:
    """Resume keys: the ids, with "#2", "#3", ... on repeats (the output ids get the same suffix)."""
    counts: Counter = Counter()
    keys = []
    for item in items:
        key = id_key(item.id)
        counts[key] += 1
        keys.append(key if counts[key] == 1 else f"{key}#{counts[key]}")
    repeated = sum(c - 1 for c in counts.values())
    if repeated:
        print(f"WARNING: {repeated} repeated id(s) in the input; their records are written as <id>#2, <id>#3, ...",
              file=sys.stderr)
    return keys


# ---------------------------------------------------------------------- generation
def _cue(engine: InferenceEngine, first: tuple[str, str], sq: SQSettings):
    """[USER q0, ASSISTANT a0, VUSER cue]: the prompt every question of an image is sampled from."""
    return context_conversation(engine, SQContext(first[1]), vuser_cue=True, conv_mode=sq.conv_mode,
                                describe_prompt=first[0])


def _answer_prompt(engine: InferenceEngine, first: tuple[str, str], question: str, sq: SQSettings):
    conv = context_conversation(engine, SQContext(first[1]), conv_mode=sq.conv_mode, describe_prompt=first[0])
    conv.append_message(conv.vuser_role, question)
    conv.append_message(conv.roles[1], None)
    return conv


def _describe_prompt(engine: InferenceEngine, sq: SQSettings):
    return context_conversation(engine, None, conv_mode=sq.conv_mode, describe_prompt=sq.describe_prompt)


class QAMaker:
    """The run_jobs answerer: a batch of images -> their records' conversations; counts what it drops."""

    COUNTS = ("images", "records", "records_without_questions", "questions_sampled", "questions_kept",
              *(f"dropped_{r}" for r in DROP_REASONS), "dropped_empty_answer", "unreadable_images",
              "empty_descriptions")

    def __init__(self) -> None:
        self.counts: Counter = Counter()

    def as_dict(self) -> dict[str, int]:
        """Every count of this run (zeros included), for the meta file."""
        return {name: self.counts[name] for name in self.COUNTS}

    def __call__(self, context: cc.RunContext, batch: list[cc.Job], loaded: list[tuple]) -> list[dict[str, Any]]:
        engine, sq, bs = context.engine, context.sq, context.batch_size
        ok = [n for n, (_, error) in enumerate(loaded) if error is None]
        self.counts["images"] += len(batch)
        self.counts["unreadable_images"] += len(batch) - len(ok)
        image = {n: loaded[n][0][0] for n in ok}
        first: dict[int, tuple[str, str]] = {n: batch[n].metadata["first"] for n in ok if batch[n].metadata["first"]}

        # 1. the first QA pair: the record's own, or a description
        to_describe = [n for n in ok if n not in first]
        requests = [Request(_describe_prompt(engine, sq), [image[n]], ("describe", batch[n].key)) for n in to_describe]
        q0 = f"{DEFAULT_IMAGE_TOKEN}\n{sq.describe_prompt}"
        for n, text in zip(to_describe, engine.generate(requests, sq.description, bs)):
            description = clean_answer(text)
            if description:
                first[n] = (q0, description)
            else:
                self.counts["empty_descriptions"] += 1
        with_context = [n for n in ok if n in first]

        # 2. K questions per image, each sampled from the same VUSER cue
        k = sq.n_shot
        requests = [Request(_cue(engine, first[n], sq), [image[n]], ("question", batch[n].key, j))
                    for n in with_context for j in range(k)]
        texts = engine.generate(requests, sq.questions, bs) if requests else []
        questions: dict[int, list[str]] = {}
        for i, n in enumerate(with_context):
            kept, dropped = filter_questions(texts[i * k : (i + 1) * k], earlier=[first[n][0]])
            questions[n] = kept
            self.counts["questions_sampled"] += k
            self.counts.update({f"dropped_{reason}": c for reason, c in dropped.items()})

        # 3. answer every kept question (independently, after the first pair)
        asked = [(n, q) for n in with_context for q in questions[n]]
        requests = [Request(_answer_prompt(engine, first[n], q, sq), [image[n]], ("answer", batch[n].key, j))
                    for j, (n, q) in enumerate(asked)]
        answers = [clean_answer(a) for a in engine.generate(requests, sq.answers, bs)] if requests else []
        pairs: dict[int, list[tuple[str, str]]] = {n: [] for n in with_context}
        for (n, q), a in zip(asked, answers):
            if a:
                pairs[n].append((q, a))
            else:
                self.counts["dropped_empty_answer"] += 1

        rows: list[dict[str, Any]] = []
        for n in range(len(batch)):
            if n not in ok:
                rows.append({})  # run_jobs adds the image's "error"
            elif n not in first:
                rows.append({"error": "the model's description of the image is empty"})
            else:
                turns = [first[n], *pairs[n]]
                self.counts["questions_kept"] += len(pairs[n])
                self.counts["records"] += 1
                self.counts["records_without_questions"] += not pairs[n]
                rows.append({"conversations": [t for q, a in turns for t in ({"from": "human", "value": q},
                                                                              {"from": "gpt", "value": a})]})
        return rows

    def summary(self) -> str:
        c = self.counts
        dropped = sum(v for k, v in c.items() if k.startswith("dropped_") and k != "dropped_empty_answer")
        reasons = ", ".join(f"{r.replace('_', ' ')} {c[f'dropped_{r}']}" for r in DROP_REASONS)
        return (f"visual_qa: {c['images']} images -> {c['records']} records; {c['questions_sampled']} questions "
                f"sampled, {c['questions_kept']} kept, {dropped} dropped ({reasons}), "
                f"{c['dropped_empty_answer']} dropped for an empty answer; {c['records_without_questions']} records "
                f"without a new question; error rows: {c['unreadable_images']} unreadable images, "
                f"{c['empty_descriptions']} empty descriptions")


# ---------------------------------------------------------------------- the program
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llava.eval.visual_qa", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    flags.add_model_args(parser)
    cc.add_question_args(parser, question_file_required=False, answers_aliases=("--output",))
    parser.set_defaults(question_file=None)
    flags.add_decoding_args(parser, ANSWERING)
    flags.add_sq_args(parser, QUESTION_SAMPLING)
    g = parser.add_argument_group("images")
    g.add_argument("--data-path", "--data_path", dest="question_file", metavar="DATA_FILE",
                   help="an existing LLaVA-format data file (JSON list or JSONL; same as --question-file): its "
                        "records' images, and with --context auto their first QA pair")
    g.add_argument("--start", type=int, default=0, help="first image of the sorted folder listing / input file")
    g.add_argument("--end", type=int, default=None, help="one past the last image (default: all)")
    g.add_argument("--context", choices=CONTEXT_MODES, default="auto",
                   help="auto: a record's own first QA pair when it has one, else the model's description; "
                        "describe: always the description")
    return parser


def write_json_list(rows_file: str | os.PathLike, output: str | os.PathLike) -> int:
    """The records of `rows_file` (error rows left out) as one JSON list in `output`; returns how many."""
    records = [r for r in read_jsonl(rows_file) if "error" not in r]
    tmp = Path(f"{output}.tmp")
    tmp.write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, output)
    return len(records)


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.question_file and not args.image_folder:
        parser.error("give --image-folder (every image in it) or --question-file / --data-path (records with an "
                     "\"image\")")
    items, no_image = items_from_args(args)
    if no_image:
        print(f"{args.question_file}: {no_image} record(s) without an image path skipped", file=sys.stderr)
    output = args.answers_file
    json_list = str(output).endswith(".json")
    if json_list:
        args.answers_file = f"{output}.rows.jsonl"
    jobs = [cc.Job(key=key, question="", images=[cc.image_path(args.image_folder, item.image)],
                   row={"id": key if key != id_key(item.id) else item.id, "image": item.image},
                   metadata={"first": item.first})
            for key, item in zip(unique_keys(items), items)]
    maker = QAMaker()
    writer = cc.run_jobs(args, jobs, "visual_qa", answerer=maker, unit="image",
                         key=lambda row: id_key(row.get("id")),
                         extra_fingerprint={"image_folder": args.image_folder, "start": args.start, "end": args.end,
                                            "context": args.context})
    if maker.counts["images"]:
        writer.finish_run(generation=maker.as_dict())
        print(maker.summary(), file=sys.stderr)
    if json_list:
        n = write_json_list(args.answers_file, output)
        print(f"{output}: {n} records (JSON list; resumable rows in {args.answers_file})", file=sys.stderr)


if __name__ == "__main__":
    main()
