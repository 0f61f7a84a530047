"""Seeded augmentation workers: the batches of an epoch depend only on (seed, epoch), in a fixed order."""

import numpy as np
import torch
from batchgenerators.dataloading.data_loader import DataLoader
from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter

from nnunet_mvext.training_setup.seeding import deterministic_augmenter, start_epoch


class _RandomLoader(DataLoader):
    """Draws like nnU-Net's loader and transforms: numpy for the sample, torch for the augmentation."""

    def __init__(self):
        super().__init__(list(range(100)), 1, infinite=True)

    def generate_train_batch(self):
        return {"data": np.random.randint(0, 1 << 30), "aug": float(torch.rand(1)), "worker": self.thread_id}


def _epochs(epochs, seed=7, workers=2, per_epoch=6):
    nondet = NonDetMultiThreadedAugmenter(_RandomLoader(), None, workers, num_cached=2)
    augmenter = deterministic_augmenter(nondet, seed, stream=0)
    batches = {}
    try:
        for epoch in epochs:
            start_epoch(seed, epoch, 0, (augmenter,))
            batches[epoch] = [next(augmenter) for _ in range(per_epoch)]
    finally:
        augmenter._finish()
    return batches


def test_an_epoch_repeats_exactly_also_when_a_run_starts_there():
    uninterrupted = _epochs([0, 1, 2])
    assert [b["worker"] for b in uninterrupted[1]] == [0, 1] * 3, "batches come from the workers in turn"
    assert _epochs([1, 2]) == {1: uninterrupted[1], 2: uninterrupted[2]}
    draws = [(b["data"], b["aug"]) for epoch in uninterrupted.values() for b in epoch]
    assert len(set(draws)) == len(draws), "workers and epochs draw different numbers"


def test_another_seed_draws_other_batches():
    assert _epochs([0], seed=7)[0] != _epochs([0], seed=8)[0]


def test_single_threaded_augmenter_draws_from_the_seeded_main_process():
    single = SingleThreadedAugmenter(_RandomLoader(), None)
    assert deterministic_augmenter(single, 7, 0) is single
    runs = []
    for _ in range(2):
        start_epoch(7, 3, 0, (single,))
        runs.append([next(single) for _ in range(3)])
    assert runs[0] == runs[1]


def test_the_replacement_keeps_nnunets_workers_and_queue():
    nondet = NonDetMultiThreadedAugmenter(_RandomLoader(), None, 3, num_cached=6)
    augmenter = deterministic_augmenter(nondet, 7, 1)
    assert isinstance(augmenter, MultiThreadedAugmenter)
    assert augmenter.num_processes == 3 and augmenter.num_cached_per_queue == 2
