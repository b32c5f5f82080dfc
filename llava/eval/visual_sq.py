"""Self-questioning data tool: describe each image, sample N VUSER questions, write JSONL {question_id, image, questions}."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from llava.eval import cli_common as cc
from llava.eval.answer_file import AnswerFile
from llava.eval.engine import GenerationSettings
from llava.eval.self_questioning import SQSettings, describe, sample_questions

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llava.eval.visual_sq", description=__doc__)
    cc.add_model_args(parser)
    cc.add_question_args(parser, question_file_required=False)
    parser.set_defaults(question_file=None)
    g = parser.add_argument_group("self-questioning")
    g.add_argument("--start", type=int, default=0, help="first image of the sorted folder listing / question file")
    g.add_argument("--end", type=int, default=None, help="one past the last image (default: all)")
    g.add_argument("--n_shot", "--n-shot", dest="n_shot", type=int, default=3, help="questions per image")
    g.add_argument("--temperature", type=float, default=1.2, help="question sampling temperature")
    g.add_argument("--top_p", "--top-p", dest="top_p", type=float, default=0.95)
    g.add_argument("--top_k", "--top-k", dest="top_k", type=int, default=300)
    g.add_argument("--max_new_tokens", "--max-new-tokens", dest="max_new_tokens", type=int, default=300,
                   help="per question")
    g.add_argument("--description_max_new_tokens", type=int, default=1024, help="the (greedy) description turn")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--sq_conv_mode", default="v1_sq")
    g.add_argument("--scenes", default=None, metavar="SCENES_JSONL",
                   help="ShapesWorld scene records (scenes.jsonl of an export): judge the questions (well-formed, "
                        "grounded, distinct, types), print the scores and write ANSWERS_FILE.quality.json")
    return parser


def report_quality(answers_file: str | os.PathLike, scenes_file: str | os.PathLike) -> dict:
    """Judge every image's questions in `answers_file` against ShapesWorld scene records; print and save."""
    from llava.data.shapesworld.export import load_scenes
    from llava.data.shapesworld.judge import score_answer_rows
    from llava.eval.convert import read_jsonl

    metrics = score_answer_rows(read_jsonl(answers_file), load_scenes(scenes_file))
    Path(f"{answers_file}.quality.json").write_text(json.dumps(metrics, indent=1) + "\n")
    summary = {k: metrics[k] for k in ("n_images", "n_questions", "well_formed", "grounded", "distinct", "n_types",
                                       "meets_bar", "n_unjudged") if k in metrics}
    print(json.dumps(summary))
    return metrics


def list_images(folder: str | os.PathLike) -> list[str]:
    """Image files of a folder, sorted by name (the reference sliced an unsorted listing, D23)."""
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


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.question_file and not args.image_folder:
        parser.error("give --image-folder (every image in it) or --question-file (lines with an \"image\")")
    items = cc.get_chunk(items_from_args(args), args.num_chunks, args.chunk_idx)
    jobs = [cc.Job(key=str(qid).strip(), question="", images=[cc.image_path(args.image_folder, image)],
                   row={"question_id": qid, "image": image}) for qid, image in items]
    writer = AnswerFile(args.answers_file, overwrite=args.overwrite)
    pending = [job for job in jobs if job.key not in writer.done][: args.limit]
    if not pending:
        print(f"{args.answers_file}: all {len(jobs)} images are done", file=sys.stderr)
        if args.scenes:
            report_quality(args.answers_file, args.scenes)
        return
    engine = cc.load_engine(args)
    sq = SQSettings(
        n_shot=args.n_shot,
        questions=GenerationSettings(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                                     max_new_tokens=args.max_new_tokens, seed=args.seed),
        description=GenerationSettings(max_new_tokens=args.description_max_new_tokens),
        conv_mode=args.sq_conv_mode,
    )
    model_id = cc.model_name_from_path(args.model_path)
    fingerprint = {"entry_point": "visual_sq", "model_path": str(args.model_path), "model_base": args.model_base,
                   "lora_pretrain": args.lora_pretrain, "image_aspect_ratio": engine.image_aspect_ratio,
                   "self_questioning": sq.as_dict(), "question_file": args.question_file,
                   "image_folder": args.image_folder, "start": args.start, "end": args.end,
                   "num_chunks": args.num_chunks, "chunk_idx": args.chunk_idx}
    writer.start_run(fingerprint, {"engine": engine.info(), "batch_size": args.batch_size, "args": vars(args)})
    batches = [pending[i : i + args.batch_size] for i in range(0, len(pending), args.batch_size)]
    bar = None
    if args.progress:
        from tqdm import tqdm

        bar = tqdm(total=len(pending), unit="image", desc="visual_sq")
    try:
        with ThreadPoolExecutor(max(1, args.num_workers)) as pool:
            for batch, loaded in cc.prefetch_images(pool, batches):
                ok = [n for n, (_, error) in enumerate(loaded) if error is None]
                images = [loaded[n][0][0] for n in ok]
                ids = [batch[n].key for n in ok]
                descriptions = describe(engine, images, sq, args.batch_size, ids)
                questions = sample_questions(engine, images, descriptions, sq.n_shot, sq.questions,
                                             args.batch_size, ids, sq)
                made = dict(zip(ok, zip(descriptions, questions)))
                rows = []
                for n, (job, (_, error)) in enumerate(zip(batch, loaded)):
                    desc, qs = made.get(n, ("", []))
                    row = {**job.row, "questions": qs, "description": desc, "model_id": model_id}
                    if error is not None:
                        row["error"] = error
                    rows.append(row)
                writer.write(rows)
                if bar is not None:
                    bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
        writer.close()
    writer.finish_run()
    print(f"{args.answers_file}: {writer.n_written} images questioned ({writer.n_errors_written} unreadable)",
          file=sys.stderr)
    if args.scenes:
        report_quality(args.answers_file, args.scenes)


if __name__ == "__main__":
    main()
