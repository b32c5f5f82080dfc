"""Padding-free batches: samples concatenated into packed rows whose `position_ids` restart at 0 per sample."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.mm_utils import expand_image_tokens


class PackedCollator:
    """Collate `LazySupervisedDataset` items into packed rows instead of padded ones.

    Each sample's image sentinels are expanded to `num_image_tokens` positions (as `DataCollatorForSupervisedDataset`
    does), then samples are concatenated into rows of at most `max_row_tokens` positions (None: one row for the
    whole batch, in order; otherwise first fit decreasing, which fills rows best). `position_ids` restart at 0 at every sample and there is no
    `attention_mask`: transformers 5 then builds a block-diagonal causal mask from the position_ids
    (`masking_utils.find_packed_sequence_indices`, sdpa/eager/flex; flash_attention_2 uses them as varlen
    boundaries), so no token sees another sample and the loss equals the padded batch's loss.

    The first label of every sample is IGNORE_INDEX: in a packed row it would be the target of the previous
    sample's last token (in a padded row it is never a target). Rows shorter than the longest are filled with a
    padding segment (its own positions from 0, labels ignored), which no real token attends to.
    `pixel_values` follows the order of the image positions in the packed rows.
    Pair it with per-device batches of several samples (the row count is what the GPU sees) and with
    `group_by_modality_length` off or on: packing does not depend on the order.
    """

    def __init__(
        self,
        tokenizer=None,
        num_image_tokens: int = 576,
        model_max_length: int | None = 2048,
        pad_token_id: int | None = None,
        max_row_tokens: int | None = None,
        pad_to_multiple_of: int | None = None,
    ):
        if pad_token_id is None and tokenizer is not None:
            pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.unk_token_id
        if num_image_tokens < 1:
            raise ValueError(f"num_image_tokens must be positive, got {num_image_tokens}")
        if max_row_tokens is not None and max_row_tokens < 1:
            raise ValueError(f"max_row_tokens must be positive, got {max_row_tokens}")
        self.pad_token_id = 0 if pad_token_id is None else int(pad_token_id)
        self.num_image_tokens = int(num_image_tokens)
        self.model_max_length = model_max_length
        self.max_row_tokens = max_row_tokens
        self.pad_to_multiple_of = pad_to_multiple_of

    def _expand(self, inst: dict) -> tuple[list[int], list[int], torch.Tensor | None]:
        ids = inst["input_ids"].tolist() if torch.is_tensor(inst["input_ids"]) else list(inst["input_ids"])
        labels = inst["labels"].tolist() if torch.is_tensor(inst["labels"]) else list(inst["labels"])
        pixel_values = inst.get("pixel_values")
        n_sentinels = sum(1 for t in ids if t == IMAGE_TOKEN_INDEX)
        n_images = 0 if pixel_values is None else int(pixel_values.shape[0])
        if n_sentinels != n_images:
            raise ValueError(f"sample {inst.get('index')} has {n_sentinels} image token(s) but {n_images} image(s)")
        ids, labels = expand_image_tokens(ids, labels, self.num_image_tokens)
        if self.model_max_length is not None and len(ids) > self.model_max_length:
            raise ValueError(
                f"sample {inst.get('index')} is {len(ids)} positions long with images expanded, beyond "
                f"model_max_length={self.model_max_length}; the dataset's truncation must run first"
            )
        if labels:
            labels[0] = IGNORE_INDEX
        return ids, labels, pixel_values

    def _rows(self, lengths: Sequence[int]) -> list[list[int]]:
        """Sample indices per row: one row, or first fit decreasing (longest first) under `max_row_tokens`."""
        if self.max_row_tokens is None:
            return [list(range(len(lengths)))]
        rows: list[list[int]] = []
        room: list[int] = []
        for i in sorted(range(len(lengths)), key=lambda j: (-lengths[j], j)):
            n = lengths[i]
            if n > self.max_row_tokens:
                raise ValueError(f"sample of {n} positions does not fit max_row_tokens={self.max_row_tokens}")
            slot = next((r for r, free in enumerate(room) if free >= n), None)
            if slot is None:
                rows.append([])
                room.append(self.max_row_tokens)
                slot = len(rows) - 1
            rows[slot].append(i)
            room[slot] -= n
        return rows

    def __call__(self, instances: Sequence[dict]) -> dict[str, torch.Tensor]:
        if not instances:
            raise ValueError("cannot collate an empty batch")
        samples = [self._expand(inst) for inst in instances]
        rows = self._rows([len(ids) for ids, _, _ in samples])
        width = max(sum(len(samples[i][0]) for i in row) for row in rows)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        position_ids = torch.zeros((len(rows), width), dtype=torch.long)
        images = []
        for r, row in enumerate(rows):
            start = 0
            for i in row:
                ids, lab, pixels = samples[i]
                end = start + len(ids)
                input_ids[r, start:end] = torch.tensor(ids)
                labels[r, start:end] = torch.tensor(lab)
                position_ids[r, start:end] = torch.arange(len(ids))
                if pixels is not None:
                    images.append(pixels)
                start = end
            position_ids[r, start:] = torch.arange(width - start)  # padding segment: its own sequence
        batch = {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}
        if images:
            batch["pixel_values"] = torch.cat(images, dim=0)
        return batch
