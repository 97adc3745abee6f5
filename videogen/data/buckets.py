"""Bucket-aware batching: every batch holds clips of one shape, and the order is a pure function of
(seed, epoch), so a resumed run replays exactly the batches an uninterrupted one would have seen.

Clips of different lengths and resolutions cannot be stacked into one tensor, so the dataset assigns each
clip a bucket (its (frames, height, width), or its latent shape once cached) and the sampler shuffles
within buckets, cuts them into batches and shuffles the batches (the scheme of NovelAI's aspect-ratio
bucketing, used by musubi-tuner and the LTX-Video trainer).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence

import numpy as np
import torch

from videogen.errors import InputError


def epoch_batches(buckets: Sequence[Hashable], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """All batches of one epoch, in order: indices grouped by bucket, shuffled with a (seed, epoch) RNG.

    A bucket's last batch may be short; it is kept so that small buckets still train.
    """
    rng = np.random.Generator(np.random.PCG64([seed, epoch]))
    groups: dict[Hashable, list[int]] = {}
    for index, bucket in enumerate(buckets):
        groups.setdefault(bucket, []).append(index)
    batches = []
    for members in groups.values():  # dict order = order of first appearance: deterministic
        members = rng.permutation(members).tolist()
        batches += [members[i : i + batch_size] for i in range(0, len(members), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


class BucketBatchSampler(torch.utils.data.Sampler):
    """Batches of indices for one process of ``num_replicas``, each batch from one bucket.

    Process ``rank`` takes every ``num_replicas``-th batch of the epoch, and the epoch is cut to a
    multiple of ``num_replicas`` so that every process runs the same number of steps. ``set_epoch`` and
    ``skip`` position the sampler; both are part of a checkpoint's data state.
    """

    def __init__(
        self,
        buckets: Sequence[Hashable],
        batch_size: int,
        *,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        self.buckets = list(buckets)
        self.batch_size = batch_size
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.start = 0
        total = len(epoch_batches(self.buckets, batch_size, seed, 0))
        if total < num_replicas:
            raise InputError(
                f"only {total} batch(es) of {batch_size} in the data, fewer than the {num_replicas} processes"
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.start = 0

    def skip(self, batches: int) -> None:
        """Start the current epoch after its first ``batches`` batches (resuming mid-epoch)."""
        self.start = batches

    def batches(self, epoch: int) -> list[list[int]]:
        """This process's batches of ``epoch``."""
        every = epoch_batches(self.buckets, self.batch_size, self.seed, epoch)
        usable = len(every) - len(every) % self.num_replicas
        return every[self.rank : usable : self.num_replicas]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches(self.epoch)[self.start :]

    def __len__(self) -> int:
        return len(self.batches(self.epoch)) - self.start
