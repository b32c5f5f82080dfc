"""Length- and modality-grouped training samplers, seeded per epoch, any modality mix (docs/reference.md#d21-sampler).

Indices are laid out as the reference does: a seeded permutation is cut into megabatches of
`world_size * batch_size` (the trainer passes `world_size = processes * grad_accum`), each megabatch is
sorted by length (longest first) and split into `world_size` chunks of `batch_size` with balanced total
length, chunk after chunk. A DataLoader batching consecutive indices (and accelerate giving batch k to
process k % processes) then hands every rank, in every accumulation step, one chunk of the same megabatch.
With both modalities, image and text-only samples are grouped separately, the full megabatches of both
are shuffled together, and the two remainders form one final mixed megabatch. Every shuffle uses the
generator derived from (seed, epoch), so every rank computes the same order, and each epoch differs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A torch generator for (seed, epoch); independent streams for different pairs."""
    digest = hashlib.sha256(f"llava-sampler/{int(seed)}/{int(epoch)}".encode()).digest()
    gen = torch.Generator()
    gen.manual_seed(int.from_bytes(digest[:8], "big") >> 1)
    return gen


def split_to_even_chunks(indices: Sequence[int], lengths: Sequence[int], num_chunks: int) -> list[list[int]]:
    """Deal `indices` (longest first) into `num_chunks` equal-sized chunks, each to the currently shortest."""
    if len(indices) % num_chunks != 0:
        return [list(indices[i::num_chunks]) for i in range(num_chunks)]
    per_chunk = len(indices) // num_chunks
    chunks: list[list[int]] = [[] for _ in range(num_chunks)]
    totals = [0.0] * num_chunks
    for index in indices:
        shortest = totals.index(min(totals))
        chunks[shortest].append(index)
        totals[shortest] += lengths[index]
        if len(chunks[shortest]) == per_chunk:
            totals[shortest] = float("inf")
    return chunks


def get_length_grouped_indices(
    lengths: Sequence[int], batch_size: int, world_size: int, generator: torch.Generator
) -> list[int]:
    """Permute, cut into megabatches, sort each by length, split each into balanced per-rank chunks."""
    indices = torch.randperm(len(lengths), generator=generator).tolist()
    megabatch_size = world_size * batch_size
    out: list[int] = []
    for start in range(0, len(indices), megabatch_size):
        megabatch = sorted(indices[start : start + megabatch_size], key=lambda i: lengths[i], reverse=True)
        for chunk in split_to_even_chunks(megabatch, lengths, world_size):
            out.extend(chunk)
    return out


def get_modality_length_grouped_indices(
    lengths: Sequence[int], batch_size: int, world_size: int, generator: torch.Generator
) -> list[int]:
    """Signed lengths (> 0 image, < 0 text-only): single-modality megabatches, the remainders mixed at the end."""
    if any(length == 0 for length in lengths):
        raise ValueError("modality lengths must be non-zero (> 0 for image samples, < 0 for text-only)")
    if all(length > 0 for length in lengths) or all(length < 0 for length in lengths):
        return get_length_grouped_indices([abs(x) for x in lengths], batch_size, world_size, generator)
    mm = [(i, x) for i, x in enumerate(lengths) if x > 0]
    lang = [(i, -x) for i, x in enumerate(lengths) if x < 0]
    megabatch_size = world_size * batch_size
    groups = []
    for members in (mm, lang):
        idx = [i for i, _ in members]
        lens = [x for _, x in members]
        order = [idx[k] for k in get_length_grouped_indices(lens, batch_size, world_size, generator)]
        groups.append([order[k : k + megabatch_size] for k in range(0, len(order), megabatch_size)])
    mm_mb, lang_mb = groups
    full = [mb for mb in mm_mb + lang_mb if len(mb) == megabatch_size]
    remainder = [i for mb in mm_mb + lang_mb if len(mb) < megabatch_size for i in mb]
    megabatches = [full[k] for k in torch.randperm(len(full), generator=generator).tolist()]
    if remainder:
        megabatches.append(sorted(remainder))
    return [i for mb in megabatches for i in mb]


class LengthGroupedSampler(Sampler[int]):
    """Reference-style grouped sampler; `group_by_modality` reads the sign of `lengths` as the modality.

    `batch_size` is the per-device batch; `world_size` the number of chunks per megabatch (processes x
    gradient-accumulation steps). `dataset`, if given, has its `set_epoch` called with the sampler's, so
    per-epoch data draws (SQ, augmentation) follow the epoch even where accelerate only tells the sampler.
    """

    def __init__(
        self,
        batch_size: int,
        world_size: int = 1,
        lengths: Sequence[int] | None = None,
        generator: torch.Generator | None = None,
        group_by_modality: bool = False,
        *,
        seed: int | None = None,
        dataset: object = None,
    ):
        if lengths is None:
            raise ValueError("lengths must be provided")
        if batch_size < 1 or world_size < 1:
            raise ValueError(f"batch_size and world_size must be positive, got {batch_size}, {world_size}")
        self.batch_size = int(batch_size)
        self.world_size = int(world_size)
        self.lengths = [int(x) for x in lengths]
        self.group_by_modality = group_by_modality
        if seed is None:
            seed = generator.initial_seed() if generator is not None else 42
        self.seed = int(seed)
        self.epoch = 0
        self.dataset = dataset
        if group_by_modality and any(x == 0 for x in self.lengths):
            raise ValueError("modality lengths must be non-zero (> 0 for image samples, < 0 for text-only)")
        if not group_by_modality and any(x < 0 for x in self.lengths):
            self.lengths = [abs(x) for x in self.lengths]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if self.dataset is not None and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def indices(self) -> list[int]:
        """This epoch's order (the same on every rank)."""
        gen = epoch_generator(self.seed, self.epoch)
        if self.group_by_modality:
            return get_modality_length_grouped_indices(self.lengths, self.batch_size, self.world_size, gen)
        return get_length_grouped_indices(self.lengths, self.batch_size, self.world_size, gen)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())


class ModalityLengthGroupedSampler(LengthGroupedSampler):
    """`LengthGroupedSampler` grouping image and text-only samples apart (signed `lengths`); one modality is fine."""

    def __init__(
        self,
        batch_size: int,
        world_size: int = 1,
        lengths: Sequence[int] | None = None,
        generator: torch.Generator | None = None,
        *,
        seed: int | None = None,
        dataset: object = None,
    ):
        super().__init__(batch_size, world_size, lengths, generator, group_by_modality=True, seed=seed,
                         dataset=dataset)
