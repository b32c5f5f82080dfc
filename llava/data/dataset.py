"""The supervised training dataset: records checked up front, images and tokens built lazily, bad samples skipped."""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
from collections import Counter

import numpy as np
import torch

from llava.constants import DEFAULT_IMAGE_TOKEN
from llava.conversation import TemplateError, get_template
from llava.data.augment import TrainAugment, augment_rng
from llava.data.bad_samples import BadSampleLog, current_rank, format_counts, format_entry
from llava.data.collator import DataCollatorForSupervisedDataset
from llava.data.image_check import DEFAULT_MAX_MISSING, ImageCheck, existing_files
from llava.data.reader import iter_records
from llava.data.records import (
    BadRecordError,
    build_conversation,
    describe_record,
    normalize_conversations,
    sq_rng,
)
from llava.data.tokenization import preprocess_record, truncate_sample
from llava.mm_utils import ASPECT_RATIOS, MAX_IMAGE_PIXELS, ImageLoadError, load_image, process_images

logger = logging.getLogger(__name__)

BAD_SAMPLE_POLICIES = ("skip", "error")
# ImageLoadError kinds -> bad-sample kinds.
IMAGE_ERROR_KINDS = {"missing": "missing_image", "corrupt": "image_corrupt", "too_large": "image_too_large",
                     "unsupported": "image_unsupported"}


@dataclasses.dataclass
class DataConfig:
    """What the data pipeline needs from the command line (train.py fills it)."""

    data_path: str  # JSON list or JSONL; several files joined by commas
    image_folder: str | None
    template: str  # --version: plain, v1, v1_sq, ...
    image_aspect_ratio: str = "square"  # pad | square | resize
    model_max_length: int = 2048
    num_image_tokens: int = 576  # embeddings one image occupies (model.num_image_tokens)
    sq_r: float = 0.0
    seed: int = 42
    data_aug: bool = False  # docs/reference.md#d7-data-augmentation, training only
    bad_sample_policy: str = "skip"  # skip | error
    mm_use_im_start_end: bool = False
    report_dir: str | None = None  # where bad_samples.jsonl goes (the output_dir)
    max_image_pixels: int = MAX_IMAGE_PIXELS  # larger images are refused (decompression bombs)
    max_missing_images: float = DEFAULT_MAX_MISSING  # image_check's stop rules; 1.0 never stops

    def validate(self) -> None:
        get_template(self.template)  # KeyError naming the valid templates
        if self.image_aspect_ratio not in ASPECT_RATIOS:
            raise ValueError(f"image_aspect_ratio must be one of {ASPECT_RATIOS}, got {self.image_aspect_ratio!r}")
        if self.bad_sample_policy not in BAD_SAMPLE_POLICIES:
            raise ValueError(f"bad_sample_policy must be one of {BAD_SAMPLE_POLICIES}, got {self.bad_sample_policy!r}")
        if not 0.0 <= self.sq_r <= 1.0:
            raise ValueError(f"sq_r must lie in [0, 1], got {self.sq_r}")
        if not 0.0 <= self.max_missing_images <= 1.0:
            raise ValueError(f"max_missing_images must lie in [0, 1], got {self.max_missing_images}")
        if self.sq_r > 0 and get_template(self.template).vuser_role is None:
            raise ValueError(f"sq_r={self.sq_r} needs a template with a VUSER role (v1_sq), not {self.template!r}")
        if self.model_max_length < 1 or self.num_image_tokens < 1:
            raise ValueError("model_max_length and num_image_tokens must be positive")

    @property
    def data_files(self) -> list[str]:
        if os.path.isfile(self.data_path):  # a name that itself contains a comma
            return [self.data_path]
        files = [p.strip() for p in self.data_path.split(",") if p.strip()]
        if not files:
            raise ValueError("data_path names no file")
        return files


# ---------------------------------------------------------------------------- records
def image_field(record: object) -> str | None:
    """The record's image path, None for text-only; raises BadRecordError("malformed") for other values."""
    if not isinstance(record, dict) or record.get("image") is None:
        return None
    image = record["image"]
    if not isinstance(image, str) or not image.strip():
        raise BadRecordError("malformed", f"'image' must be a non-empty path string, got {image!r}",
                             record_id=record.get("id"))
    return image


def _word_count(record: dict) -> int:
    return sum(len(str(turn.get("value", "")).split()) for turn in record["conversations"])


class _RecordStore:
    """Records as one JSON byte buffer plus offsets: forked DataLoader workers share it without copy-on-write
    growth (a list of dicts gets copied page by page as reference counts change)."""

    def __init__(self, records: list[bytes]):
        self._offsets = np.zeros(len(records) + 1, dtype=np.int64)
        np.cumsum([len(r) for r in records], out=self._offsets[1:])
        self._blob = np.frombuffer(b"".join(records), dtype=np.uint8) if records else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i: int) -> dict:
        return json.loads(self._blob[self._offsets[i] : self._offsets[i + 1]].tobytes())


# ---------------------------------------------------------------------------- the dataset
class LazySupervisedDataset(torch.utils.data.Dataset):
    """LLaVA-format records -> {input_ids, labels, pixel_values, index}.

    Up front (no image decoding): parse, validate every record's structure and template fit, check each image
    file exists (print image_check's table; stop with MissingImagesError, whatever the policy, when too many do
    not); bad records are dropped (policy "skip") or raise (policy "error"). Per item: decode and preprocess
    the image, tokenize with the SQ draw of (seed, epoch, record index), truncate. A sample that fails then is
    reported and replaced by the next valid one (i+1, i+2, ... wrapping), so batches never shrink and nothing
    is trained as all-ignore. Record indices (`index` in reports, SQ and augmentation draws)
    count records across all data files in order, bad ones included, so they do not move when images vanish.
    """

    def __init__(self, config: DataConfig, tokenizer, image_processor):
        config.validate()
        self.config = config
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.augment = TrainAugment(image_processor) if config.data_aug else None
        self.bad_samples = BadSampleLog(config.report_dir)
        self._epoch = torch.zeros(1, dtype=torch.long).share_memory_()  # seen by DataLoader workers, too
        self._bad_images: set[int] = set()  # dataset indices whose image failed in this process
        gc_was_enabled = gc.isenabled()
        gc.disable()  # millions of fresh dicts and lists would trigger pointless full collections
        try:
            self._scan()
        finally:
            if gc_was_enabled:
                gc.enable()

    # ------------------------------------------------------------------ up-front scan
    def _image_path(self, image: str) -> str:
        return os.path.join(self.config.image_folder, image) if self.config.image_folder else image

    def _scan(self) -> None:
        cfg = self.config
        bad: list[dict] = []
        kept: list[tuple[int, str, int, dict, str | None]] = []  # (record index, file, position, record, image)
        self.files = cfg.data_files
        fits: dict[tuple, str | None] = {}  # template fit by conversation shape (see _check_record)
        self._sq_eligible: dict[int, int] = {}  # record index -> questions after the first (image records)
        index = 0
        for path in self.files:
            for position, record in iter_records(path):
                record_id = record.get("id") if isinstance(record, dict) else None
                try:
                    if isinstance(record, BadRecordError):
                        raise record
                    image = image_field(record)
                    eligible = self._check_record(record, image is not None, index, fits)
                    if image is not None and eligible:
                        self._sq_eligible[index] = eligible
                    kept.append((index, path, position, record, image))
                except BadRecordError as exc:
                    image = record.get("image") if isinstance(record, dict) else None
                    bad.append(self._entry(index, record_id, image, exc.kind, exc.reason, path, position))
                index += 1
        self.num_records = index

        exists = existing_files(self._image_path(img) for _, _, _, _, img in kept if img is not None)
        check = ImageCheck(cfg.image_folder)
        good = []
        for item in kept:
            index, path, position, record, image = item
            if image is None:
                good.append(item)
                continue
            full = self._image_path(image)
            where = f"{describe_record(record.get('id'), index)}, {os.path.basename(path)} record {position}"
            check.add(image, exists[full], where, full)
            if exists[full]:
                good.append(item)
            else:
                reason = f"image file {full!r} does not exist"
                bad.append(self._entry(index, record.get("id"), image, "missing_image", reason, path, position))
        bad.sort(key=lambda e: e["index"])
        self.image_check = check.finish()
        if check.total and current_rank() == 0:
            print(check.table(), flush=True)
        stop = check.error(cfg.max_missing_images)
        if stop is not None:  # whatever the bad-sample policy: a wrong folder is no bad sample
            raise stop

        if bad and cfg.bad_sample_policy == "error":
            first = bad[0]
            raise BadRecordError(first["kind"], f"{first['reason']} (file {first['file']}, record {first['position']})",
                                 record_id=first["id"], index=first["index"])
        self._store = _RecordStore([json.dumps(r).encode("ascii") for _, _, _, r, _ in good])
        self._record_index = np.array([g[0] for g in good], dtype=np.int64)
        words = np.array([_word_count(g[3]) for g in good], dtype=np.int64)
        has_image = np.array([g[4] is not None for g in good], dtype=bool)
        self._lengths = words + has_image * cfg.num_image_tokens
        self._modality_lengths = np.where(has_image, self._lengths, -words)
        file_no = {path: k for k, path in enumerate(self.files)}
        self._file_id = np.array([file_no[g[1]] for g in good], dtype=np.int32)

        self.skipped_up_front = Counter(e["kind"] for e in bad)
        if current_rank() == 0:
            self.bad_samples.reset(bad)
            for n, entry in enumerate(bad):
                if n == self.bad_samples.max_console:
                    logger.warning("... %d more bad records; see %s", len(bad) - n, self.bad_samples.path or "above")
                    break
                logger.warning("skipping bad record %s", format_entry(entry))
            counts = format_counts(dict(self.skipped_up_front))
            print(f"{self.num_records} records, {len(bad)} skipped" + (f": {counts}" if counts else "")
                  + f" ({len(good)} kept, {int(has_image.sum())} with images; data: {cfg.data_path})", flush=True)
            if get_template(cfg.template).vuser_role is not None:
                print(self._vuser_summary([g[0] for g in good if g[4] is not None]), flush=True)
        else:
            self.bad_samples.adopt(bad)
        if not good:
            raise ValueError(f"no usable training record in {cfg.data_path} ({self.num_records} records, all bad)")

    def _vuser_summary(self, image_indices: list[int]) -> str:
        """How many questions the first epoch turns into VUSER turns: the same draws as `apply_self_questioning`
        (one per question after the first, from `sq_rng(seed, 0, index)`), without rendering anything."""
        cfg = self.config
        eligible = [(i, self._sq_eligible.get(i, 0)) for i in image_indices]
        total = sum(n for _, n in eligible)
        vuser = 0
        if cfg.sq_r > 0:
            for index, n in eligible:
                if n:
                    rng = sq_rng(cfg.seed, 0, index)
                    vuser += sum(rng.random() < cfg.sq_r for _ in range(n))
        share = f" ({vuser / total:.1%})" if total else ""
        return (f"self-questioning: --sq_r {cfg.sq_r}: {vuser} of the {total} questions after the first of the "
                f"{len(image_indices)} image samples become VUSER turns in epoch 1{share}")

    def _check_record(self, record: dict, has_image: bool, index: int, fits: dict) -> int:
        """What `render_record` checks, without SQ: structure (normalize_conversations), then template fit.
        Whether the template takes the turns depends only on their kinds and where the image marker is, so
        that answer is cached per shape (building a Conversation per record would double the scan time).
        Returns how many user questions follow the first (the turns `--sq_r` may turn into VUSER turns)."""
        turns = normalize_conversations(record, has_image=has_image, index=index)
        shape = (tuple(kind for kind, _ in turns), DEFAULT_IMAGE_TOKEN in turns[0][1])
        if shape not in fits:
            try:
                build_conversation(turns, self.config.template, mm_use_im_start_end=self.config.mm_use_im_start_end)
                fits[shape] = None
            except TemplateError as exc:
                fits[shape] = str(exc)
        if fits[shape] is not None:
            raise BadRecordError("template_mismatch", fits[shape], record_id=record.get("id"), index=index)
        return sum(1 for j, kind in enumerate(shape[0]) if j > 0 and kind == "user")

    @staticmethod
    def _entry(index, record_id, image, kind, reason, path, position, stage="upfront") -> dict:
        return {"index": index, "id": record_id, "image": image, "kind": kind, "reason": reason,
                "file": path, "position": position, "stage": stage}

    # ------------------------------------------------------------------ public API
    def __len__(self) -> int:
        return len(self._store)

    @property
    def lengths(self) -> list[int]:
        """Approximate token lengths: words plus `num_image_tokens` for an image."""
        return self._lengths.tolist()

    @property
    def modality_lengths(self) -> list[int]:
        """Signed lengths: positive for image samples, negative for text-only (the sampler's convention)."""
        return self._modality_lengths.tolist()

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """SQ and augmentation draws derive from (seed, epoch, record index); DataLoader workers see this."""
        self._epoch[0] = int(epoch)

    def record(self, i: int) -> dict:
        """The raw record behind dataset item `i` (after up-front filtering)."""
        return self._store[i]

    def record_index(self, i: int) -> int:
        """The record's position across the data files (bad records counted) for dataset item `i`."""
        return int(self._record_index[i])

    def __getitem__(self, i: int) -> dict:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} samples")
        i %= n
        for step in range(n):
            j = (i + step) % n
            if j in self._bad_images:
                continue
            try:
                return self._build(j)
            except (BadRecordError, ImageLoadError) as exc:
                self._lazy_failure(j, exc)
        raise RuntimeError(f"none of the {n} samples could be loaded; see {self.bad_samples.path or 'the log'}")

    # ------------------------------------------------------------------ per item
    def _build(self, j: int) -> dict:
        cfg = self.config
        record = self._store[j]
        index = self.record_index(j)
        image = image_field(record)
        sample = preprocess_record(
            record, self.tokenizer, cfg.template, has_image=image is not None, sq_r=cfg.sq_r, seed=cfg.seed,
            epoch=self.epoch, index=index, mm_use_im_start_end=cfg.mm_use_im_start_end,
        )
        sample = truncate_sample(sample, cfg.model_max_length, cfg.num_image_tokens,
                                 record_id=record.get("id"), index=index)
        pixel_values = None
        if image is not None:
            pil = load_image(self._image_path(image), max_pixels=cfg.max_image_pixels)
            if self.augment is not None:
                pixel_values = self.augment(pil, augment_rng(cfg.seed, self.epoch, index)).unsqueeze(0)
            else:
                pixel_values = process_images([pil], self.image_processor, cfg.image_aspect_ratio)
        return {
            "input_ids": torch.tensor(sample.input_ids, dtype=torch.long),
            "labels": torch.tensor(sample.labels, dtype=torch.long),
            "pixel_values": pixel_values,
            "index": j,
        }

    def _lazy_failure(self, j: int, exc: BadRecordError | ImageLoadError) -> None:
        record = self._store[j]
        index = self.record_index(j)
        if isinstance(exc, ImageLoadError):
            kind, reason = IMAGE_ERROR_KINDS.get(exc.kind, f"image_{exc.kind}"), str(exc)
            self._bad_images.add(j)  # decoding is the expensive part; never retry it in this process
        else:
            kind, reason = exc.kind, exc.reason
        path = self.files[int(self._file_id[j])]
        if self.config.bad_sample_policy == "error":
            raise BadRecordError(kind, f"{reason} (file {path})", record_id=record.get("id"), index=index) from exc
        self.bad_samples.record(index=index, record_id=record.get("id"), image=record.get("image"), kind=kind,
                                reason=reason, file=path, stage="load", epoch=self.epoch)


def make_supervised_data_module(config: DataConfig, tokenizer, image_processor) -> dict:
    """{"train_dataset", "eval_dataset": None, "data_collator"} for the HF Trainer."""
    dataset = LazySupervisedDataset(config, tokenizer, image_processor)
    collator = DataCollatorForSupervisedDataset(
        tokenizer, num_image_tokens=config.num_image_tokens, model_max_length=config.model_max_length,
    )
    return {"train_dataset": dataset, "eval_dataset": None, "data_collator": collator}
