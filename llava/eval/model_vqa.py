"""Open-ended VQA inference (LLaVA-Bench in-the-Wild, MM-Vet): jsonl {question_id, image, text} -> answers."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from llava.eval import cli_common as cc
from llava.eval.model_vqa_loader import jobs_from_questions
from llava.inference import flags


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llava.eval.model_vqa", description=__doc__)
    flags.add_model_args(parser)
    cc.add_question_args(parser)
    cc.add_protocol_args(parser, "model_vqa")
    flags.add_decoding_args(parser, flags.BENCHMARK.replace(max_new_tokens=1024))
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = cc.parse_args(build_parser(), argv)
    questions = cc.read_questions(args.question_file)
    cc.run_jobs(args, jobs_from_questions(questions, args.image_folder), "model_vqa")


if __name__ == "__main__":
    main()
