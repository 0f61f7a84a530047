"""The ``seed`` setting: a training that repeats bit for bit on the CPU, also when resumed with ``--c``.

Random numbers in an nnU-Net training come from three places: the network initialisation (torch), the main process
(e.g. dropout; with ``nnUNet_n_proc_DA=0`` also the data loading) and the augmentation workers, where nnU-Net's data
loader draws patches with numpy and batchgeneratorsv2 draws transforms with numpy and torch. nnU-Net's
``NonDetMultiThreadedAugmenter`` seeds its workers from the operating system and returns batches in whatever order
they finish, and its checkpoint holds no random state.

With a seed:

* :func:`seed_process` runs before the network is built;
* at every epoch start :func:`start_epoch` seeds the main process from ``(seed, epoch, rank)`` and restarts the
  augmentation workers, each seeded from ``(seed, epoch, stream, rank, worker)`` (stream 0: training, 1: validation);
  :func:`deterministic_augmenter` has replaced nnU-Net's augmenter by batchgenerators' ``MultiThreadedAugmenter``,
  which takes batches from the workers in turn (a fixed order).

Every epoch therefore starts from a state that depends only on the seed and the epoch number. A run resumed at an
epoch boundary continues exactly the stream of the uninterrupted run, with no random state in the checkpoint: the
workers' state could not be saved anyway (they run ahead of the training loop by their queue length). The cost is one
restart of the workers per epoch (they refill their queues while the first batches of the epoch are drawn).
"""

from __future__ import annotations

import random

import numpy as np
import torch
from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter


def derived_seed(*entropy: int) -> int:
    """A 32-bit seed from a tuple of non-negative integers (numpy's SeedSequence: distinct tuples, unrelated seeds)."""
    return int(np.random.SeedSequence(list(entropy)).generate_state(1)[0])


def seed_process(seed: int) -> None:
    """Seed Python's ``random``, numpy's global generator and torch (CPU and every GPU) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class SeededWorkerLoader:
    """An nnU-Net data loader whose augmentation workers seed themselves from ``(seed, epoch, stream, rank, worker)``.

    batchgenerators' workers call ``set_thread_id(worker)`` once at start; this wrapper seeds Python, numpy and torch
    there (batchgenerators seeds numpy only) and limits torch to one thread per worker, as nnU-Net's own augmenter does.
    :func:`start_epoch` sets ``epoch`` before the workers restart.
    """

    def __init__(self, data_loader, seed: int, stream: int, rank: int):
        self.data_loader = data_loader
        self.seed, self.stream, self.rank = seed, stream, rank
        self.epoch = 0

    def set_thread_id(self, thread_id: int) -> None:
        torch.set_num_threads(1)
        seed_process(derived_seed(self.seed, self.epoch, self.stream, self.rank, thread_id))
        self.data_loader.set_thread_id(thread_id)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self.data_loader)


def deterministic_augmenter(augmenter, seed: int, stream: int, rank: int = 0):
    """nnU-Net's augmenter made deterministic: a ``NonDetMultiThreadedAugmenter`` is stopped and replaced by a
    ``MultiThreadedAugmenter`` with the same data loader, workers and queue length, restarted by :func:`start_epoch`.

    A ``SingleThreadedAugmenter`` (``nnUNet_n_proc_DA=0``) is returned as it is: it draws from the main process,
    which :func:`start_epoch` seeds.
    """
    if not isinstance(augmenter, NonDetMultiThreadedAugmenter):
        return augmenter
    augmenter._finish()
    n = augmenter.num_processes
    return MultiThreadedAugmenter(SeededWorkerLoader(augmenter.generator, seed, stream, rank), None, n,
                                  num_cached_per_queue=max(2, -(-augmenter.num_cached // n)), seeds=[0] * n,
                                  pin_memory=augmenter.pin_memory, wait_time=augmenter.wait_time)


def start_epoch(seed: int, epoch: int, rank: int, augmenters) -> None:
    """Seed the main process from ``(seed, epoch, rank)`` and stop the workers of every augmenter made by
    :func:`deterministic_augmenter`; they restart at their next batch, seeded for ``epoch``."""
    seed_process(derived_seed(seed, epoch, rank))
    for augmenter in augmenters:
        if isinstance(augmenter, MultiThreadedAugmenter) and isinstance(augmenter.generator, SeededWorkerLoader):
            augmenter._finish()
            augmenter.generator.epoch = epoch
