"""Captioning inference: jsonl {question_id, image, text (the caption prompt)} -> answers (full captions, no cut)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from llava.eval import cli_common as cc
from llava.inference import flags


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llava.eval.model_cap", description=__doc__)
    flags.add_model_args(parser)
    cc.add_question_args(parser)
    cc.add_protocol_args(parser, "model_cap")
    flags.add_decoding_args(parser, flags.BENCHMARK.replace(max_new_tokens=1024))
    flags.add_sq_args(parser, flags.SQDefaults(n_shot=5, temperature=1.2, top_p=0.95, top_k=300, max_new_tokens=300))
    return parser


def jobs_from_questions(questions: Sequence[dict], image_folder: str) -> list[cc.Job]:
    """The image name (and image_id / label when given) go to `metadata`, where the caption scorer joins on them."""
    jobs = []
    for line in questions:
        qid = line["question_id"]
        meta = {k: line[k] for k in ("image", "image_id", "label") if k in line}
        images = [cc.image_path(image_folder, line["image"])] if line.get("image") else []
        jobs.append(cc.Job(key=str(qid).strip(), question=line["text"], images=images,
                           row={"question_id": qid, "prompt": line["text"]}, metadata=meta))
    return jobs


def main(argv: Sequence[str] | None = None) -> None:
    args = cc.parse_args(build_parser(), argv)
    questions = cc.read_questions(args.question_file)
    cc.run_jobs(args, jobs_from_questions(questions, args.image_folder), "model_cap")


if __name__ == "__main__":
    main()
