"""Q-Bench (A1 perception) inference with the llava_v1 template; formats in FORMATS below and in --help."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from llava.eval import cli_common as cc
from llava.inference import flags

FORMATS = """\
Questions: a JSON list (or JSONL) of {"img_path", "question", "candidates": [...], optional "id", ...}. The prompt is
the question, "\\nChoose between one of the options as follows:\\n" and one "A. candidate\\n" line per candidate.
Answers: JSONL {question_id ("id", else the position in the file), prompt, text, answer_id, model_id,
metadata: the whole question record}; the reference's "response" is `text`.
"""
CHOOSE = {"en": "\nChoose between one of the options as follows:\n", "zh": "\n在下列选项中选择一个:\n"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llava.eval.model_vqa_qbench", description=__doc__, epilog=FORMATS,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    flags.add_model_args(parser)
    cc.add_question_args(parser)
    cc.add_protocol_args(parser, "model_vqa_qbench")
    flags.add_decoding_args(parser, flags.BENCHMARK.replace(max_new_tokens=1024))
    parser.add_argument("--lang", default="en", choices=tuple(CHOOSE))
    return parser


def jobs_from_records(records: Sequence[dict], image_folder: str, lang: str = "en") -> list[cc.Job]:
    jobs = []
    for position, record in enumerate(records):
        message = record["question"] + CHOOSE[lang]
        for letter, candidate in zip("ABCDEFGH", record["candidates"]):
            message += f"{letter}. {candidate}\n"
        qid = record.get("id", position)
        jobs.append(cc.Job(key=str(qid).strip(), question=message, images=[cc.image_path(image_folder, record["img_path"])],
                           row={"question_id": qid, "prompt": message}, metadata=dict(record)))
    return jobs


def main(argv: Sequence[str] | None = None) -> None:
    args = cc.parse_args(build_parser(), argv)
    records = cc.read_questions(args.question_file)
    cc.run_jobs(args, jobs_from_records(records, args.image_folder, args.lang), "model_vqa_qbench",
                extra_fingerprint={"lang": args.lang})


if __name__ == "__main__":
    main()
