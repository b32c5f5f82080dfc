"""Short-answer VQA inference (VQAv2, GQA, VizWiz, TextVQA, POPE, MME): jsonl {question_id, image, text} -> answers."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from llava.eval import cli_common as cc
from llava.inference import flags


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llava.eval.model_vqa_loader", description=__doc__)
    flags.add_model_args(parser)
    cc.add_question_args(parser)
    cc.add_protocol_args(parser, "model_vqa_loader")
    flags.add_decoding_args(parser, flags.BENCHMARK.replace(max_new_tokens=128))
    flags.add_sq_args(parser, flags.SQDefaults(n_shot=3, temperature=1.0, top_p=0.65, top_k=50, max_new_tokens=100))
    return parser


def jobs_from_questions(questions: Sequence[dict], image_folder: str) -> list[cc.Job]:
    """One job per line; `prompt` is the question text as in the file (reference behaviour)."""
    jobs = []
    for line in questions:
        qid = line["question_id"]
        images = [cc.image_path(image_folder, line["image"])] if line.get("image") else []
        jobs.append(cc.Job(key=str(qid).strip(), question=line["text"], images=images,
                           row={"question_id": qid, "prompt": line["text"]}))
    return jobs


def main(argv: Sequence[str] | None = None) -> None:
    args = cc.parse_args(build_parser(), argv)
    questions = cc.read_questions(args.question_file)
    cc.run_jobs(args, jobs_from_questions(questions, args.image_folder), "model_vqa_loader")


if __name__ == "__main__":
    main()
