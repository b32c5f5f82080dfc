"""Length/modality-grouped samplers: one or two modalities, seeded per epoch, full coverage, rank balance."""

from __future__ import annotations

import random

import pytest
import torch
from torch.utils.data import BatchSampler

from llava.train.sampler import (
    LengthGroupedSampler,
    ModalityLengthGroupedSampler,
    split_to_even_chunks,
)


def signed_lengths(n_image: int, n_text: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    lengths = [rng.randint(600, 900) for _ in range(n_image)] + [-rng.randint(5, 400) for _ in range(n_text)]
    rng.shuffle(lengths)
    return lengths


@pytest.mark.parametrize("n_image,n_text", [(37, 0), (0, 37), (1, 0)])
def test_one_modality_works(n_image, n_text):
    lengths = signed_lengths(n_image, n_text)
    sampler = ModalityLengthGroupedSampler(batch_size=4, world_size=2, lengths=lengths, seed=1)
    order = list(sampler)
    assert sorted(order) == list(range(len(lengths))) and len(sampler) == len(lengths)
    # Inside each full megabatch the per-rank chunks come longest first.
    for start in range(0, len(order) - len(order) % 8, 8):
        mb = order[start : start + 8]
        assert max(abs(lengths[i]) for i in mb[:4]) == max(abs(lengths[i]) for i in mb)


@pytest.mark.parametrize("batch_size,world_size", [(4, 1), (2, 3), (3, 4)])
def test_two_modalities_give_single_modality_megabatches(batch_size, world_size):
    lengths = signed_lengths(53, 29)
    sampler = ModalityLengthGroupedSampler(batch_size, world_size, lengths, seed=7)
    order = list(sampler)
    assert sorted(order) == list(range(len(lengths)))  # every index exactly once
    mb = batch_size * world_size
    n_mixed_tail = 53 % mb + 29 % mb
    full = order[: len(order) - n_mixed_tail]
    assert len(full) % mb == 0
    for start in range(0, len(full), mb):
        signs = {lengths[i] > 0 for i in full[start : start + mb]}
        assert len(signs) == 1
    kinds = [lengths[full[s]] > 0 for s in range(0, len(full), mb)]
    assert True in kinds and False in kinds


def test_deterministic_per_seed_and_epoch():
    lengths = signed_lengths(40, 40)
    a = ModalityLengthGroupedSampler(2, 2, lengths, seed=3)
    b = ModalityLengthGroupedSampler(2, 2, lengths, generator=torch.Generator().manual_seed(3))
    assert list(a) == list(b) == list(a)
    a.set_epoch(1)
    epoch1 = list(a)
    assert epoch1 != list(b)
    b.set_epoch(1)
    assert list(b) == epoch1
    assert list(ModalityLengthGroupedSampler(2, 2, lengths, seed=4)) != list(b)
    plain = LengthGroupedSampler(2, 2, [abs(x) for x in lengths], seed=3)
    assert list(plain) == list(LengthGroupedSampler(2, 2, lengths, seed=3))  # signs ignored without modality


def test_set_epoch_reaches_the_dataset():
    class Recorder:
        epoch = None

        def set_epoch(self, epoch):
            self.epoch = epoch

    ds = Recorder()
    sampler = ModalityLengthGroupedSampler(2, 1, [1, -1, 2], seed=0, dataset=ds)
    sampler.set_epoch(4)
    assert sampler.epoch == 4 and ds.epoch == 4


def test_even_chunks_balance_lengths():
    lengths = [100, 90, 50, 40, 30, 20, 10, 5]
    chunks = split_to_even_chunks(sorted(range(8), key=lambda i: -lengths[i]), lengths, 2)
    assert [len(c) for c in chunks] == [4, 4]
    totals = [sum(lengths[i] for i in c) for c in chunks]
    assert abs(totals[0] - totals[1]) <= 20
    with pytest.raises(ValueError):
        ModalityLengthGroupedSampler(2, 1, [3, 0, -1])


def test_ranks_share_a_modality_at_every_step():
    """Sharded as accelerate does it (batch k to process k % n): each optimizer step takes one megabatch."""
    from accelerate.data_loader import BatchSamplerShard

    n_proc, grad_accum, bs = 2, 2, 3
    mb = bs * n_proc * grad_accum
    lengths = signed_lengths(61, 47, seed=5)
    sampler = ModalityLengthGroupedSampler(bs, n_proc * grad_accum, lengths, seed=11)
    order = list(sampler)
    batches = BatchSampler(sampler, bs, drop_last=False)
    per_rank = [list(BatchSamplerShard(batches, n_proc, r, split_batches=False)) for r in range(n_proc)]
    n_single = (len(lengths) - (61 % mb + 47 % mb)) // mb
    for step in range(n_single):
        got = [i for r in range(n_proc) for b in per_rank[r][step * grad_accum : (step + 1) * grad_accum] for i in b]
        assert sorted(got) == sorted(order[step * mb : (step + 1) * mb])
        assert len({lengths[i] > 0 for i in got}) == 1
