"""Self-questioning data tool: describe each image, sample N VUSER questions, write JSONL {question_id, image, questions}."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path

from llava.eval import cli_common as cc
from llava.inference import flags
from llava.inference.self_questioning import describe, sample_questions

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


# The reference's question sampling for visual_sq (docs/reference.md#question-generation): the decoding flags sample
# the questions.
QUESTION_SAMPLING = flags.BENCHMARK.replace(temperature=1.2, top_p=0.95, top_k=300, max_new_tokens=300)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llava.eval.visual_sq", description=__doc__)
    flags.add_model_args(parser)
    cc.add_question_args(parser, question_file_required=False)
    parser.set_defaults(question_file=None)
    flags.add_decoding_args(parser, QUESTION_SAMPLING)
    flags.add_sq_args(parser, flags.SQDefaults(answer_flag=False, question_flags=False))
    g = parser.add_argument_group("images")
    g.add_argument("--start", type=int, default=0, help="first image of the sorted folder listing / question file")
    g.add_argument("--end", type=int, default=None, help="one past the last image (default: all)")
    g.add_argument("--scenes", default=None, metavar="SCENES_JSONL",
                   help="ShapesWorld scene records (scenes.jsonl of an export): judge the questions (well-formed, "
                        "grounded, distinct, types), print the scores and write ANSWERS_FILE.quality.json")
    return parser


def report_quality(answers_file: str | os.PathLike, scenes_file: str | os.PathLike) -> dict:
    """Judge every image's questions in `answers_file` against ShapesWorld scene records; print and save."""
    from llava.eval.answer_file import read_jsonl
    from llava.shapesworld.export import load_scenes
    from llava.shapesworld.judge import score_answer_rows

    metrics = score_answer_rows(read_jsonl(answers_file), load_scenes(scenes_file))
    Path(f"{answers_file}.quality.json").write_text(json.dumps(metrics, indent=1) + "\n")
    summary = {k: metrics[k] for k in ("n_images", "n_questions", "well_formed", "grounded", "distinct", "n_types",
                                       "meets_bar", "n_unjudged") if k in metrics}
    print(json.dumps(summary))
    return metrics


def list_images(folder: str | os.PathLike) -> list[str]:
    """Image files of a folder, sorted by name (the reference sliced an unsorted listing,
    docs/reference.md#d23-question-generation-over-a-folder)."""
    root = Path(os.path.expanduser(str(folder)))
    return sorted(p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def items_from_args(args: argparse.Namespace) -> list[tuple[object, str]]:
    """(question_id, image) pairs: from --question-file ("image", with "question_id" / "id"), else the folder."""
    if args.question_file:
        records = cc.read_questions(args.question_file)
        items = [(r.get("question_id", r.get("id", n)), r["image"]) for n, r in enumerate(records)]
    else:
        items = [(name, name) for name in list_images(args.image_folder)]
    return items[args.start : args.end]


def ask_rows(context: cc.RunContext, batch: list[cc.Job], loaded: list[tuple]) -> list[dict]:
    """Describe each readable image, sample `n_shot` questions about it; rows get questions, description, model id."""
    ok = [n for n, (_, error) in enumerate(loaded) if error is None]
    images = [loaded[n][0][0] for n in ok]
    ids = [batch[n].key for n in ok]
    sq, batch_size = context.sq, context.batch_size
    descriptions = describe(context.engine, images, sq, batch_size, ids)
    questions = sample_questions(context.engine, images, descriptions, sq.n_shot, sq.questions, batch_size, ids, sq)
    made = dict(zip(ok, zip(descriptions, questions)))
    rows = []
    for n in range(len(batch)):
        description, qs = made.get(n, ("", []))
        rows.append({"questions": qs, "description": description, "model_id": context.model_id})
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.question_file and not args.image_folder:
        parser.error("give --image-folder (every image in it) or --question-file (lines with an \"image\")")
    jobs = [cc.Job(key=str(qid).strip(), question="", images=[cc.image_path(args.image_folder, image)],
                   row={"question_id": qid, "image": image}) for qid, image in items_from_args(args)]
    cc.run_jobs(args, jobs, "visual_sq", answerer=ask_rows, unit="image",
                extra_fingerprint={"image_folder": args.image_folder, "start": args.start, "end": args.end})
    if args.scenes:
        report_quality(args.answers_file, args.scenes)


if __name__ == "__main__":
    main()
