"""Inspection CLI: show what a data file trains on (prompt with trained spans marked) or dump its tokens.

    python -m llava.data.inspect --data-path data.json --model-name-or-path TOKENIZER_DIR --version v1_sq \\
        [--sq-r 0.5] [--seed 0] [--epoch 0] [--image-folder DIR] [--max-records N] [--jsonl OUT] \\
        [--model-max-length 2048] [--image-token-len 576] [--color auto|always|never] [--max-missing-images 0.1]

It runs the training path itself (`iter_records`, `render_record`, `tokenize_prompt`, `truncate_sample`), so what it marks
is exactly what the loss sees: a character is marked when a token covering it has a label. Bad records are
reported with their id and reason, counted, and skipped; the rest is still shown. With --image-folder, the end
shows training's image table (found/missing per top-level subfolder) and says whether training would stop on it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from llava.constants import IGNORE_INDEX
from llava.data.dataset import image_field
from llava.data.image_check import DEFAULT_MAX_MISSING, ImageCheck
from llava.data.reader import iter_records
from llava.data.records import BadRecordError, describe_record
from llava.data.tokenization import TokenizedSample, render_record, tokenize_prompt, truncate_sample

GREEN, RESET = "\x1b[1;32m", "\x1b[0m"


def mark_trained(prompt: str, sample: TokenizedSample, spans: list[tuple[int, int]], color: bool) -> str:
    """The prompt (up to the last kept token) with the characters of trained tokens marked."""
    kept = len(sample.input_ids)
    end = max((e for _, e in spans[:kept]), default=0)
    trained = [False] * end
    for label, (s, e) in zip(sample.labels, spans[:kept]):
        if label != IGNORE_INDEX:
            trained[s:e] = [True] * (e - s)
    opening, closing = (GREEN, RESET) if color else ("[[", "]]")
    out, inside = [], False
    for i in range(end):
        if trained[i] != inside:
            out.append(opening if trained[i] else closing)
            inside = trained[i]
        out.append(prompt[i])
    if inside:
        out.append(closing)
    if sample.truncated:
        out.append(f" <<truncated {sample.truncated} tokens>>")
    return "".join(out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llava.data.inspect", description=__doc__.splitlines()[0])
    p.add_argument("--data-path", required=True, help="LLaVA-format JSON list or JSONL file")
    p.add_argument("--model-name-or-path", required=True, help="tokenizer directory (or model dir holding one)")
    p.add_argument("--version", default="v1_sq", help="conversation template (default: v1_sq)")
    p.add_argument("--sq-r", type=float, default=0.0, help="VUSER conversion rate for v1_sq image samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epoch", type=int, default=0)
    p.add_argument("--image-folder", default=None, help="if given, a missing image file makes the record bad")
    p.add_argument("--max-records", type=int, default=None)
    p.add_argument("--jsonl", default=None, help="write {id, index, input_ids, labels} lines here instead")
    p.add_argument("--model-max-length", type=int, default=None, help="truncate as training does")
    p.add_argument("--image-token-len", type=int, default=576, help="embeddings per image, for truncation")
    p.add_argument("--mm-use-im-start-end", action="store_true")
    p.add_argument("--color", choices=["auto", "always", "never"], default="auto")
    p.add_argument("--max-missing-images", type=float, default=DEFAULT_MAX_MISSING,
                   help="training's --max_missing_images, to say whether training would stop on this data")
    return p


def process(record: object, index: int, tokenizer, args: argparse.Namespace, images: ImageCheck | None = None):
    """(conv, tokenized prompt, final sample) for one record; raises BadRecordError. In training's order:
    structure and template, then the image file (counted in `images`), then tokens."""
    if isinstance(record, BadRecordError):
        raise record
    image = image_field(record)  # None for text-only ("image" absent or null), as in training
    has_image = image is not None
    record_id = record.get("id") if isinstance(record, dict) else None
    conv = render_record(
        record, args.version, has_image=has_image, sq_r=args.sq_r, seed=args.seed, epoch=args.epoch,
        index=index, mm_use_im_start_end=args.mm_use_im_start_end,
    )
    if has_image and args.image_folder is not None:
        path = Path(args.image_folder) / image
        found = path.is_file()
        if images is not None:
            images.add(image, found, describe_record(record_id, index), str(path))
        if not found:
            raise BadRecordError("missing_image", f"image {image!r} not found in {args.image_folder}",
                                 record_id=record_id, index=index)
    tp = tokenize_prompt(conv, tokenizer)
    sample = tp.sample
    if args.model_max_length is not None:
        sample = truncate_sample(sample, args.model_max_length, args.image_token_len, record_id=record_id, index=index)
    elif sample.num_trained == 0:
        raise BadRecordError("no_trained_tokens", "no token is trained", record_id=record_id, index=index)
    return conv, tp, sample


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0.0 <= args.max_missing_images <= 1.0:
        parser.error(f"--max-missing-images {args.max_missing_images} must lie in [0, 1]")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path, use_fast=True)
    color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    out_file = open(args.jsonl, "w", encoding="utf-8") if args.jsonl else None
    n_ok, n_tokens, n_trained, n_vuser = 0, 0, 0, 0
    bad: list[BadRecordError] = []
    images = ImageCheck(args.image_folder, folder_flag="--image-folder", threshold_flag="--max-missing-images")
    try:
        for index, record in iter_records(args.data_path):
            if args.max_records is not None and index >= args.max_records:
                break
            try:
                conv, tp, sample = process(record, index, tokenizer, args, images)
            except BadRecordError as exc:
                bad.append(exc)
                print(f"!! {exc}", flush=True)
                continue
            n_ok += 1
            n_tokens += len(sample)
            n_trained += sample.num_trained
            vusers = sum(role == conv.vuser_role for role, _ in conv.messages) if conv.vuser_role else 0
            n_vuser += vusers
            record_id = record.get("id") if isinstance(record, dict) else None
            if out_file is not None:
                line = {"id": record_id, "index": index, "input_ids": sample.input_ids, "labels": sample.labels}
                out_file.write(json.dumps(line) + "\n")
                continue
            expanded = sample.expanded_length(args.image_token_len)
            print(f"=== [{index}] {describe_record(record_id)} | {len(sample)} tokens "
                  f"({expanded} with images expanded), {sample.num_images} image(s), "
                  f"{sample.num_trained} trained tokens, {vusers} VUSER turn(s) ===")
            print(mark_trained(tp.prompt, sample, tp.spans, color))
    finally:
        if out_file is not None:
            out_file.close()
    kinds = Counter(exc.kind for exc in bad)
    print(f"--- {n_ok + len(bad)} records: {n_ok} ok, {len(bad)} bad"
          + (" (" + ", ".join(f"{k}: {n}" for k, n in sorted(kinds.items())) + ")" if bad else "")
          + f"; {n_tokens} tokens, {n_trained} trained, {n_vuser} VUSER turns"
          + (f"; wrote {args.jsonl}" if args.jsonl else ""))
    for exc in bad:
        print(f"    {exc}")
    if images.total:
        print(images.finish().table())
        stop = images.error(args.max_missing_images)
        if stop is not None:
            print(f"!! training would stop here: {stop}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
