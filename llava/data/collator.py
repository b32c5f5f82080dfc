"""Batch collation: image sentinels expanded to their embedding runs, right padding, mask, images in order."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.mm_utils import expand_image_tokens, pad_sequences


class DataCollatorForSupervisedDataset:
    """Collate `LazySupervisedDataset` items into model inputs.

    Each single IMAGE_TOKEN_INDEX becomes a run of `num_image_tokens` (labels IGNORE_INDEX), so sequence
    positions equal LM positions and `model_max_length` bounds the real length (the reference cut before
    expanding: docs/reference.md#d17-truncation-counts-image-tokens). Rows are right-padded with `pad_token_id`, labels with IGNORE_INDEX; `attention_mask`
    comes from the row lengths (not `!= pad`, which breaks when pad = unk or eos occurs in the text).
    `pixel_values` is the concatenation of every row's images in row order, absent when there are none.
    """

    def __init__(
        self,
        tokenizer=None,
        num_image_tokens: int = 576,
        model_max_length: int | None = 2048,
        pad_token_id: int | None = None,
        pad_to_multiple_of: int | None = None,
    ):
        if pad_token_id is None and tokenizer is not None:
            pad_token_id = tokenizer.pad_token_id
            if pad_token_id is None:
                pad_token_id = tokenizer.unk_token_id  # the reference's pad = unk
        if num_image_tokens < 1:
            raise ValueError(f"num_image_tokens must be positive, got {num_image_tokens}")
        self.pad_token_id = 0 if pad_token_id is None else int(pad_token_id)
        self.num_image_tokens = int(num_image_tokens)
        self.model_max_length = model_max_length
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, instances: Sequence[dict]) -> dict[str, torch.Tensor]:
        if not instances:
            raise ValueError("cannot collate an empty batch")
        ids_rows, label_rows, images = [], [], []
        for inst in instances:
            ids = inst["input_ids"].tolist() if torch.is_tensor(inst["input_ids"]) else list(inst["input_ids"])
            labels = inst["labels"].tolist() if torch.is_tensor(inst["labels"]) else list(inst["labels"])
            n_sentinels = sum(1 for t in ids if t == IMAGE_TOKEN_INDEX)
            pixel_values = inst.get("pixel_values")
            n_images = 0 if pixel_values is None else int(pixel_values.shape[0])
            if n_sentinels != n_images:
                raise ValueError(
                    f"sample {inst.get('index')} has {n_sentinels} image token(s) but {n_images} image(s)"
                )
            ids, labels = expand_image_tokens(ids, labels, self.num_image_tokens)
            if self.model_max_length is not None and len(ids) > self.model_max_length:
                raise ValueError(
                    f"sample {inst.get('index')} is {len(ids)} positions long with images expanded, beyond "
                    f"model_max_length={self.model_max_length}; the dataset's truncation must run first"
                )
            ids_rows.append(ids)
            label_rows.append(labels)
            if pixel_values is not None:
                images.append(pixel_values)

        lengths = torch.tensor([len(r) for r in ids_rows])
        width = int(lengths.max())
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            width = -(-width // m) * m
            if self.model_max_length is not None:
                width = max(int(lengths.max()), min(width, self.model_max_length))
        input_ids = pad_sequences(ids_rows, self.pad_token_id)
        labels = pad_sequences(label_rows, IGNORE_INDEX)
        if width > input_ids.shape[1]:
            extra = width - input_ids.shape[1]
            input_ids = torch.nn.functional.pad(input_ids, (0, extra), value=self.pad_token_id)
            labels = torch.nn.functional.pad(labels, (0, extra), value=IGNORE_INDEX)
        attention_mask = (torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)).long()
        batch = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
        if images:
            batch["pixel_values"] = torch.cat(images, dim=0)
        return batch
