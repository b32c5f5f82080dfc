"""What every `python -m llava.eval.<module>` entry point shares: question flags, chunking, image loading and the
resumable batch loop that writes answer files. Model and decoding flags come from `llava.inference.flags`."""

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
from typing import Any, TypeVar

from PIL import Image

from llava.data.reader import read_records
from llava.eval.answer_file import AnswerFile, AnswerFileError, question_key
from llava.eval.protocol import DEFAULT_PROTOCOL, add_protocol_args, parse_args  # noqa: F401 (entry points' API)
from llava.inference.engine import GenerationSettings, InferenceEngine
from llava.inference.flags import decoding_from_args, load_engine_or_exit, sq_from_args
from llava.inference.self_questioning import SQSettings, answer_with_self_questioning
from llava.mm_utils import ImageLoadError, load_image

T = TypeVar("T")
ImageSource = str | os.PathLike | bytes | Image.Image


# ---------------------------------------------------------------------- flags
def add_question_args(parser: argparse.ArgumentParser, *, question_file_required: bool = True,
                      answers_aliases: Sequence[str] = ()) -> None:
    """`answers_aliases`: more names for --answers-file (visual_qa's --output)."""
    g = parser.add_argument_group("questions and answers")
    g.add_argument("--image-folder", "--image_folder", dest="image_folder", default="")
    g.add_argument("--question-file", "--question_file", "--questions-file", dest="question_file",
                   required=question_file_required)
    g.add_argument("--answers-file", "--answers_file", *answers_aliases, dest="answers_file", required=True,
                   help="JSONL output; resumed if it exists (see --overwrite); settings go to <file>.meta.json")
    g.add_argument("--num-chunks", "--num_chunks", dest="num_chunks", type=int, default=1)
    g.add_argument("--chunk-idx", "--chunk_idx", dest="chunk_idx", type=int, default=0)
    g.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=8)
    g.add_argument("--num-workers", "--num_workers", dest="num_workers", type=int, default=4,
                   help="image-loading threads (the next batch is read while this one generates)")
    g.add_argument("--overwrite", action="store_true", help="start a fresh answers file instead of resuming")
    g.add_argument("--limit", type=int, default=None, help="answer at most N more questions in this run")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


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
    """Questions from a JSONL file or a JSON list; a line that does not parse stops the run, naming it."""
    return read_records(path, what="question")


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


@dataclasses.dataclass
class RunContext:
    """What an answerer needs to turn a batch of jobs into rows."""

    engine: InferenceEngine
    settings: GenerationSettings
    sq: SQSettings | None
    batch_size: int
    model_id: str


# (context, jobs of a batch, their (images, error) pairs) -> the fields each job's row gets after `job.row`
Answerer = Callable[[RunContext, list[Job], list[tuple]], list[dict[str, Any]]]


def run_fingerprint(args: argparse.Namespace, engine: InferenceEngine, entry_point: str,
                    settings: GenerationSettings, sq: SQSettings | None, extra: dict[str, Any] | None) -> dict[str, Any]:
    """What must not change between a run and its resumption (batch size and workers may). The protocol is named
    only when not the default, so that answer files written before --protocol existed still resume."""
    decoding = settings.as_dict()
    if not settings.do_sample:
        decoding.pop("seed")
    protocol = getattr(args, "protocol", DEFAULT_PROTOCOL)
    return {
        "entry_point": entry_point,
        **({"protocol": protocol} if protocol != DEFAULT_PROTOCOL else {}),
        "model_path": str(args.model_path),
        "model_base": args.model_base,
        "lora_pretrain": args.lora_pretrain,
        **({"vision_tower": args.vision_tower} if getattr(args, "vision_tower", None) else {}),
        "conv_mode": engine.conv_mode,
        "image_aspect_ratio": engine.image_aspect_ratio,
        "decoding": decoding,
        "self_questioning": sq.as_dict() if sq is not None else None,
        "question_file": str(getattr(args, "question_file", None)),
        "num_chunks": args.num_chunks,
        "chunk_idx": args.chunk_idx,
        **(extra or {}),
    }


def protocol_record(args: argparse.Namespace) -> dict[str, Any]:
    """The protocol of a run for its meta.json: its name, what it set, and the given flags that won over it."""
    return {"name": getattr(args, "protocol", DEFAULT_PROTOCOL), "applied": getattr(args, "protocol_applied", {}),
            "flags_kept": getattr(args, "protocol_flags_kept", {})}


def _check_protocol(writer: AnswerFile, protocol: str) -> None:
    """A complete answers file is not resumed (nothing is generated, so the full fingerprint is never compared);
    it must still not pass for another protocol's answers."""
    recorded = (writer.read_meta() or {}).get("fingerprint")
    if writer.n_existing and recorded is not None and recorded.get("protocol", DEFAULT_PROTOCOL) != protocol:
        writer.close()
        raise AnswerFileError(
            f"{writer.path} already holds {writer.n_existing} answers made with other settings (protocol "
            f"{recorded.get('protocol', DEFAULT_PROTOCOL)}, not {protocol}); use another --answers-file, or "
            "--overwrite to start again"
        )


def run_jobs(
    args: argparse.Namespace,
    jobs: Sequence[Job],
    entry_point: str,
    *,
    extra_fingerprint: dict[str, Any] | None = None,
    key: Callable[[dict[str, Any]], str] = question_key,
    engine: InferenceEngine | None = None,
    already_chunked: bool = False,
    answerer: Answerer | None = None,
    unit: str = "q",
) -> AnswerFile:
    """Chunk, skip what is answered, generate in batches, write rows (error rows for unreadable images,
    docs/reference.md#d4-missing-images-in-evaluation).
    `already_chunked`: the caller applied --num-chunks/--chunk-idx itself (MMBench chunks questions, not rounds).
    `answerer` makes each row's fields (default: `answer_rows`, the benchmark answer with its metadata)."""
    jobs = list(jobs) if already_chunked else get_chunk(list(jobs), args.num_chunks, args.chunk_idx)
    writer = AnswerFile(args.answers_file, key=key, overwrite=args.overwrite)
    pending = [job for job in jobs if job.key not in writer.done]
    if args.limit is not None:
        pending = pending[: max(args.limit, 0)]
    if not pending:
        _check_protocol(writer, getattr(args, "protocol", DEFAULT_PROTOCOL))
        print(f"{args.answers_file}: all {len(jobs)} questions of this chunk are answered", file=sys.stderr)
        writer.path.touch()  # an empty chunk (more chunks than questions) still leaves its file for the merge
        writer.close()
        return writer
    engine = engine or load_engine_or_exit(args)
    settings = decoding_from_args(args)
    context = RunContext(engine, settings, sq_from_args(args, settings), args.batch_size,
                         model_name_from_path(args.model_path))
    writer.start_run(
        run_fingerprint(args, engine, entry_point, settings, context.sq, extra_fingerprint),
        {"engine": engine.info(), "batch_size": args.batch_size, "questions_in_chunk": len(jobs),
         "questions_pending": len(pending), "protocol": protocol_record(args), "args": vars(args)},
    )
    answerer = answerer or answer_rows
    batches = [list(pending[i : i + args.batch_size]) for i in range(0, len(pending), args.batch_size)]
    bar = None
    if args.progress:
        from tqdm import tqdm

        bar = tqdm(total=len(pending), unit=unit, desc=entry_point)
    try:
        with ThreadPoolExecutor(max(1, args.num_workers)) as pool:
            for batch, loaded in prefetch_images(pool, batches):
                rows = []
                for job, (_images, error), fields in zip(batch, loaded, answerer(context, batch, loaded)):
                    row = {**job.row, **fields}
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
    print(f"{args.answers_file}: wrote {writer.n_written} rows ({writer.n_errors_written} error rows for unreadable "
          f"images); {writer.n_existing} were already there", file=sys.stderr)
    return writer


def answer_rows(context: RunContext, batch: list[Job], loaded: list[tuple]) -> list[dict[str, Any]]:
    """The benchmark answer of each job, in the reference field order ({..., text, ..., answer_id, model_id,
    metadata}); jobs whose images failed get an empty text."""
    answers = _answer_batch(context.engine, batch, loaded, context.settings, context.sq, context.batch_size)
    return [{"text": text, **job.after, "answer_id": answer_id(context.model_id, job.key),
             "model_id": context.model_id, "metadata": {**job.metadata, **meta}}
            for job, (text, meta) in zip(batch, answers)]


def _answer_batch(engine: InferenceEngine, batch: list[Job], loaded: list[tuple], settings: GenerationSettings,
                  sq: SQSettings | None, batch_size: int) -> list[tuple[str, dict[str, Any]]]:
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
