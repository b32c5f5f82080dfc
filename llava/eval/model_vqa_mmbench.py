"""MMBench / MMBench-CN inference: TSV with base64 images; hint prepended, options appended, optional rotation."""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

from llava.constants import SINGLE_PRED_PROMPT as SINGLE_PRED_PROMPT_EN
from llava.eval import cli_common as cc
from llava.eval.answer_file import question_round_key
from llava.inference import flags

OPTION_LETTERS = "ABCDEFGHIJ"
SINGLE_PRED_PROMPT = {
    "en": SINGLE_PRED_PROMPT_EN,
    "cn": "请直接回答选项字母。",
}


def is_none(value: Any) -> bool:
    """Empty TSV cells (pandas' NaN in the reference)."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in ("", "nan", "none")


def read_tsv(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of an MMBench TSV (standard quoting, as pandas.read_table); no pandas needed."""
    csv.field_size_limit(sys.maxsize)
    with open(os.path.expanduser(str(path)), encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _index(value: str) -> int | str:
    try:
        return int(value)
    except ValueError:
        return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llava.eval.model_vqa_mmbench", description=__doc__)
    flags.add_model_args(parser)
    cc.add_question_args(parser)
    cc.add_protocol_args(parser, "model_vqa_mmbench")
    flags.add_decoding_args(parser, flags.BENCHMARK.replace(max_new_tokens=1024))
    parser.add_argument("--single-pred-prompt", "--single_pred_prompt", dest="single_pred_prompt", action="store_true")
    parser.add_argument("--all-rounds", "--all_rounds", dest="all_rounds", action="store_true",
                        help="ask once per rotation of the options (round_id 0..n-1)")
    parser.add_argument("--lang", default="en", choices=tuple(SINGLE_PRED_PROMPT))
    return parser


def jobs_from_rows(rows: Sequence[dict[str, str]], all_rounds: bool, single_pred_prompt: bool,
                   lang: str = "en") -> list[cc.Job]:
    """Rows -> jobs in (row, round) order. `prompt` is hint + question + options, without the suffix (reference)."""
    images_by_index = {str(r.get("index")): r.get("image", "") for r in rows}
    jobs = []
    for row in rows:
        letters = [c for c in OPTION_LETTERS if c in row]
        options: list[str] = []
        for c in letters:
            if is_none(row[c]):
                break
            options.append(row[c])
        option_chars = list(OPTION_LETTERS[: len(options)])
        image = row.get("image", "")
        if len(image) <= 64 and image in images_by_index and image != str(row.get("index")):
            image = images_by_index[image]  # MMBench v1.1 refers to another row's image by its index
        idx = _index(row["index"])
        for round_idx in range(len(options) if all_rounds else 1):
            question = row["question"]
            if not is_none(row.get("hint")):
                question = row["hint"] + "\n" + question
            for char, option in zip(OPTION_LETTERS, options):
                question += "\n" + char + ". " + option
            asked = question + ("\n" + SINGLE_PRED_PROMPT[lang] if single_pred_prompt else "")
            jobs.append(cc.Job(
                key=f"{str(idx).strip()}#{round_idx}", question=asked, images=["base64:" + image],
                row={"question_id": idx, "round_id": round_idx, "prompt": question},
                after={"options": list(options), "option_char": list(option_chars)},
            ))
            options = options[1:] + options[:1]
            option_chars = option_chars[1:] + option_chars[:1]
    return jobs


def main(argv: Sequence[str] | None = None) -> None:
    args = cc.parse_args(build_parser(), argv)
    rows = read_tsv(args.question_file)
    # Chunks split questions (TSV rows), not rounds, like the reference.
    rows = cc.get_chunk(rows, args.num_chunks, args.chunk_idx)
    jobs = jobs_from_rows(rows, args.all_rounds, args.single_pred_prompt, args.lang)
    cc.run_jobs(args, jobs, "model_vqa_mmbench", key=question_round_key, already_chunked=True,
                extra_fingerprint={"all_rounds": args.all_rounds, "single_pred_prompt": args.single_pred_prompt,
                                   "lang": args.lang})


if __name__ == "__main__":
    main()
