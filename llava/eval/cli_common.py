"""Flags, chunking, image loading and the answer loop shared by every `python -m llava.eval.<module>` entry point."""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import hashlib
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image

from llava.eval.answer_file import AnswerFile, question_key
from llava.eval.engine import GenerationSettings, InferenceEngine
from llava.mm_utils import ImageLoadError, load_image

T = TypeVar("T")
ImageSource = str | os.PathLike | bytes | Image.Image


# ---------------------------------------------------------------------- flags
def add_model_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("model")
    g.add_argument("--model-path", "--model_path", dest="model_path", required=True, help="checkpoint directory")
    g.add_argument("--model-base", "--model_base", dest="model_base", default=None,
                   help="base LLM for projector-only and LoRA checkpoints")
    g.add_argument("--lora_pretrain", "--lora-pretrain", dest="lora_pretrain", default=None,
                   help="Vit-lora folder (default: <model-path>/Vit-lora when present)")
    g.add_argument("--conv-mode", "--conv_mode", dest="conv_mode", default=None,
                   help="conversation template (default: the checkpoint's, else v1)")
    g.add_argument("--image-aspect-ratio", dest="image_aspect_ratio", default=None, choices=("pad", "square", "resize"),
                   help="image preprocessing (default: the checkpoint's image_aspect_ratio, as in training)")
    g.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    g.add_argument("--dtype", default=None, choices=("auto", "fp16", "bf16", "fp32"),
                   help="weights dtype (default: fp16 on GPU, fp32 on CPU)")
    g.add_argument("--load-4bit", "--load_4bit", dest="load_4bit", action="store_true")
    g.add_argument("--load-8bit", "--load_8bit", dest="load_8bit", action="store_true")


def add_decoding_args(parser: argparse.ArgumentParser, *, max_new_tokens: int = 128, temperature: float = 0.0) -> None:
    g = parser.add_argument_group("decoding")
    g.add_argument("--temperature", type=float, default=temperature, help="0 = greedy")
    g.add_argument("--top_p", "--top-p", dest="top_p", type=float, default=None)
    g.add_argument("--top_k", "--top-k", dest="top_k", type=int, default=None)
    g.add_argument("--num_beams", "--num-beams", dest="num_beams", type=int, default=1)
    g.add_argument("--max_new_tokens", "--max-new-tokens", dest="max_new_tokens", type=int, default=max_new_tokens)
    g.add_argument("--repetition_penalty", "--repetition-penalty", dest="repetition_penalty", type=float, default=None)
    g.add_argument("--seed", type=int, default=0, help="seed for sampled decoding (per batch)")


def add_question_args(parser: argparse.ArgumentParser, *, question_file_required: bool = True) -> None:
    g = parser.add_argument_group("questions and answers")
    g.add_argument("--image-folder", "--image_folder", dest="image_folder", default="")
    g.add_argument("--question-file", "--question_file", "--questions-file", dest="question_file",
                   required=question_file_required)
    g.add_argument("--answers-file", "--answers_file", dest="answers_file", required=True,
                   help="JSONL output; resumed if it exists (see --overwrite); settings go to <file>.meta.json")
    g.add_argument("--num-chunks", "--num_chunks", dest="num_chunks", type=int, default=1)
    g.add_argument("--chunk-idx", "--chunk_idx", dest="chunk_idx", type=int, default=0)
    g.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=8)
    g.add_argument("--num-workers", "--num_workers", dest="num_workers", type=int, default=4,
                   help="image-loading threads (the next batch is read while this one generates)")
    g.add_argument("--overwrite", action="store_true", help="start a fresh answers file instead of resuming")
    g.add_argument("--limit", type=int, default=None, help="answer at most N more questions in this run")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def add_sq_args(parser: argparse.ArgumentParser, *, n_shot: int = 3, temperature: float = 1.0, top_p: float = 0.65,
                top_k: int = 50, max_new_tokens: int = 100) -> None:
    """Test-time self-questioning flags; defaults are per entry point (SPEC 7.3)."""
    g = parser.add_argument_group("self-questioning (v1_sq template)")
    g.add_argument("--sq", action="store_true", help="answer after the model described and questioned the image")
    g.add_argument("--n_shot", "--n-shot", dest="n_shot", type=int, default=n_shot, help="self-questions per image")
    g.add_argument("--sq_temperature", type=float, default=temperature, help="question sampling temperature")
    g.add_argument("--sq_top_p", type=float, default=top_p)
    g.add_argument("--sq_top_k", type=int, default=top_k)
    g.add_argument("--sq_max_new_tokens", type=int, default=max_new_tokens, help="per self-question")
    g.add_argument("--sq_description_max_new_tokens", type=int, default=1024, help="for the description turn")
    g.add_argument("--sq_conv_mode", default="v1_sq", help="template of the whole SQ procedure (needs a VUSER role)")


# ---------------------------------------------------------------------- settings from flags
def decoding_from_args(args: argparse.Namespace) -> GenerationSettings:
    return GenerationSettings(
        temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, num_beams=args.num_beams,
        max_new_tokens=args.max_new_tokens, repetition_penalty=args.repetition_penalty, seed=args.seed,
    )


def sq_from_args(args: argparse.Namespace, answers: GenerationSettings):
    """SQSettings when `--sq` is given, else None. Self-answers use the main decoding flags."""
    if not getattr(args, "sq", False):
        return None
    from llava.eval.self_questioning import SQSettings

    return SQSettings(
        n_shot=args.n_shot,
        questions=GenerationSettings(temperature=args.sq_temperature, top_p=args.sq_top_p, top_k=args.sq_top_k,
                                     max_new_tokens=args.sq_max_new_tokens, seed=args.seed),
        answers=answers,
        description=answers.replace(max_new_tokens=args.sq_description_max_new_tokens),
        conv_mode=args.sq_conv_mode,
    )


def load_engine(args: argparse.Namespace) -> InferenceEngine:
    return InferenceEngine.from_pretrained(
        args.model_path, args.model_base, lora_pretrain=args.lora_pretrain, load_4bit=args.load_4bit,
        load_8bit=args.load_8bit, device=args.device, dtype=args.dtype, conv_mode=args.conv_mode,
        image_aspect_ratio=args.image_aspect_ratio,
    )


# ---------------------------------------------------------------------- helpers
def split_list(items: Sequence[T], n: int) -> list[Sequence[T]]:
    """LLaVA's contiguous ceil-split into (at most) n chunks."""
    if n < 1:
        raise ValueError(f"--num-chunks must be >= 1, got {n}")
    size = max(1, math.ceil(len(items) / n))
    return [items[i : i + size] for i in range(0, len(items), size)]


def get_chunk(items: Sequence[T], n: int, k: int) -> list[T]:
    """Chunk k of n; concatenating chunks 0..n-1 gives `items` back (a chunk past the end is empty)."""
    if not 0 <= k < n:
        raise ValueError(f"--chunk-idx must be in [0, {n}), got {k}")
    chunks = split_list(items, n)
    return list(chunks[k]) if k < len(chunks) else []


def model_name_from_path(model_path: str | os.PathLike) -> str:
    """The reference's model_id: the folder name, prefixed by its parent for `checkpoint-N` folders."""
    parts = str(model_path).strip("/").split("/")
    return f"{parts[-2]}_{parts[-1]}" if parts[-1].startswith("checkpoint-") and len(parts) > 1 else parts[-1]


def answer_id(model_id: str, key: str) -> str:
    """A stable answer id (the reference drew a random shortuuid; stable ids keep resumed files identical)."""
    return hashlib.sha1(f"{model_id}\x00{key}".encode()).hexdigest()[:22]


def image_path(folder: str, name: str) -> str:
    return os.path.join(os.path.expanduser(folder), name) if folder else os.path.expanduser(name)


def read_questions(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Questions from a JSONL file or a JSON list (decided by content, not extension)."""
    import json

    text = Path(os.path.expanduser(str(path))).read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        return json.loads(stripped)
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: line {lineno} is not valid JSON: {err}") from err
    return rows


def open_image(source: ImageSource) -> Image.Image:
    """`load_image` plus base64 strings (MMBench): every failure is an ImageLoadError."""
    if isinstance(source, str) and source.startswith("base64:"):
        try:
            source = base64.b64decode(source[len("base64:") :], validate=False)
        except (binascii.Error, ValueError) as err:
            raise ImageLoadError("<base64>", "corrupt", f"not base64: {err}") from err
    return load_image(source)


# ---------------------------------------------------------------------- the answer loop
@dataclasses.dataclass
class Job:
    """One answer row to produce. `row` holds the fields before "text", `after` those between "text" and
    "answer_id" (reference field order); `images` are paths, bytes, "base64:..." strings or PIL images."""

    key: str
    question: str
    row: dict[str, Any]
    images: list[ImageSource] = dataclasses.field(default_factory=list)
    after: dict[str, Any] = dataclasses.field(default_factory=dict)
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    conv_mode: str | None = None


def load_job_images(job: Job) -> tuple[list[Image.Image] | None, str | None]:
    try:
        return [open_image(src) for src in job.images], None
    except ImageLoadError as err:
        return None, str(err)


def prefetch_images(pool: ThreadPoolExecutor, batches: list[list[Job]]) -> Iterator[tuple[list[Job], list[tuple]]]:
    """Each batch with its loaded images; the next batch is read while the caller works on this one."""
    futures: list[Future] | None = None
    for i, batch in enumerate(batches):
        if futures is None:
            futures = [pool.submit(load_job_images, job) for job in batch]
        upcoming = [pool.submit(load_job_images, job) for job in batches[i + 1]] if i + 1 < len(batches) else None
        yield batch, [f.result() for f in futures]
        futures = upcoming


def run_fingerprint(args: argparse.Namespace, engine: InferenceEngine, entry_point: str,
                    settings: GenerationSettings, sq, extra: dict[str, Any] | None) -> dict[str, Any]:
    """What must not change between a run and its resumption (batch size and workers may)."""
    decoding = settings.as_dict()
    if not settings.do_sample:
        decoding.pop("seed")
    return {
        "entry_point": entry_point,
        "model_path": str(args.model_path),
        "model_base": args.model_base,
        "lora_pretrain": args.lora_pretrain,
        "conv_mode": engine.conv_mode,
        "image_aspect_ratio": engine.image_aspect_ratio,
        "decoding": decoding,
        "self_questioning": sq.as_dict() if sq is not None else None,
        "question_file": str(getattr(args, "question_file", None)),
        "num_chunks": args.num_chunks,
        "chunk_idx": args.chunk_idx,
        **(extra or {}),
    }


def run_jobs(
    args: argparse.Namespace,
    jobs: Sequence[Job],
    entry_point: str,
    *,
    extra_fingerprint: dict[str, Any] | None = None,
    key: Callable[[dict[str, Any]], str] = question_key,
    engine: InferenceEngine | None = None,
    already_chunked: bool = False,
) -> AnswerFile:
    """Chunk, skip what is answered, generate in batches, write rows (error rows for unreadable images, D4).
    `already_chunked`: the caller applied --num-chunks/--chunk-idx itself (MMBench chunks questions, not rounds)."""
    jobs = list(jobs) if already_chunked else get_chunk(list(jobs), args.num_chunks, args.chunk_idx)
    writer = AnswerFile(args.answers_file, key=key, overwrite=args.overwrite)
    pending = [job for job in jobs if job.key not in writer.done]
    if args.limit is not None:
        pending = pending[: max(args.limit, 0)]
    if not pending:
        print(f"{args.answers_file}: all {len(jobs)} questions of this chunk are answered", file=sys.stderr)
        writer.close()
        return writer
    engine = engine or load_engine(args)
    settings = decoding_from_args(args)
    sq = sq_from_args(args, settings)
    model_id = model_name_from_path(args.model_path)
    writer.start_run(
        run_fingerprint(args, engine, entry_point, settings, sq, extra_fingerprint),
        {"engine": engine.info(), "batch_size": args.batch_size, "questions_in_chunk": len(jobs),
         "questions_pending": len(pending), "args": vars(args)},
    )
    batches = [list(pending[i : i + args.batch_size]) for i in range(0, len(pending), args.batch_size)]
    bar = None
    if args.progress:
        from tqdm import tqdm

        bar = tqdm(total=len(pending), unit="q", desc=entry_point)
    try:
        with ThreadPoolExecutor(max(1, args.num_workers)) as pool:
            for batch, loaded in prefetch_images(pool, batches):
                texts = _answer_batch(engine, batch, loaded, settings, sq, args.batch_size)
                rows = []
                for job, (_images, error), answer in zip(batch, loaded, texts):
                    text, meta = answer
                    row = {**job.row, "text": text, **job.after, "answer_id": answer_id(model_id, job.key),
                           "model_id": model_id, "metadata": {**job.metadata, **meta}}
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
    print(f"{args.answers_file}: wrote {writer.n_written} answers ({writer.n_errors_written} error rows for unreadable "
          f"images); {writer.n_existing} were already there", file=sys.stderr)
    return writer


def _answer_batch(engine: InferenceEngine, batch: list[Job], loaded: list[tuple], settings: GenerationSettings,
                  sq, batch_size: int) -> list[tuple[str, dict[str, Any]]]:
    """(text, extra metadata) per job; jobs whose images failed get ("", {})."""
    ok = [n for n, (images, error) in enumerate(loaded) if error is None]
    out: list[tuple[str, dict[str, Any]]] = [("", {})] * len(batch)
    if not ok:
        return out
    if sq is None:
        requests = [engine.request(batch[n].question, loaded[n][0], conv_mode=batch[n].conv_mode, id=batch[n].key)
                    for n in ok]
        for n, text in zip(ok, engine.generate(requests, settings, batch_size)):
            out[n] = (text, {})
        return out
    from llava.eval.self_questioning import answer_with_self_questioning

    for images in (loaded[n][0] for n in ok):
        if len(images) > 1:
            raise ValueError("--sq supports one image per question")
    results = answer_with_self_questioning(
        engine, [loaded[n][0][0] if loaded[n][0] else None for n in ok], [batch[n].question for n in ok], sq,
        settings, batch_size, [batch[n].key for n in ok],
    )
    for n, (text, ctx) in zip(ok, results):
        out[n] = (text, {"self_questioning": ctx.as_dict()} if ctx is not None else {})
    return out
