"""ScienceQA inference: a JSON list of LLaVA-format records (question in conversations[0]) -> answers."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from llava.constants import DEFAULT_IMAGE_TOKEN, SINGLE_PRED_PROMPT
from llava.eval import cli_common as cc
from llava.inference import flags


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llava.eval.model_vqa_science", description=__doc__)
    flags.add_model_args(parser)
    cc.add_question_args(parser)
    cc.add_protocol_args(parser, "model_vqa_science")
    flags.add_decoding_args(parser, flags.BENCHMARK.replace(max_new_tokens=1024))
    parser.add_argument("--single-pred-prompt", "--single_pred_prompt", dest="single_pred_prompt",
                        action="store_true", help=f"append \"\\n{SINGLE_PRED_PROMPT}\"")
    flags.add_sq_args(parser, flags.SQDefaults(n_shot=3, temperature=1.0, top_p=0.65, top_k=50, max_new_tokens=100))
    return parser


def jobs_from_records(records: Sequence[dict], image_folder: str, single_pred_prompt: bool) -> list[cc.Job]:
    """`prompt` is "<image>\\n" + question (+ the single-prediction suffix), as the reference writes it."""
    jobs = []
    for record in records:
        question = record["conversations"][0]["value"].replace(DEFAULT_IMAGE_TOKEN, "").strip()
        prompt = question
        images = []
        if record.get("image"):
            images = [cc.image_path(image_folder, record["image"])]
            prompt = DEFAULT_IMAGE_TOKEN + "\n" + prompt
        if single_pred_prompt:
            question += "\n" + SINGLE_PRED_PROMPT
            prompt += "\n" + SINGLE_PRED_PROMPT
        jobs.append(cc.Job(key=str(record["id"]).strip(), question=question, images=images,
                           row={"question_id": record["id"], "prompt": prompt}))
    return jobs


def main(argv: Sequence[str] | None = None) -> None:
    args = cc.parse_args(build_parser(), argv)
    records = cc.read_questions(args.question_file)
    cc.run_jobs(args, jobs_from_records(records, args.image_folder, args.single_pred_prompt), "model_vqa_science",
                extra_fingerprint={"single_pred_prompt": args.single_pred_prompt})


if __name__ == "__main__":
    main()
