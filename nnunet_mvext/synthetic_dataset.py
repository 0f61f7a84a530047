"""A small synthetic multi-phase contrast MRI dataset in nnU-Net's raw format (used by the demo and the tests).

Each case has three channels (``_0000`` arterial, ``_0001`` portal-venous, ``_0002`` delayed), a segmentation
(0 background, 1 organ, 2 lesion) and a case class stored in ``dataset.json`` under ``"classification"``.

Intensities (before noise, relative to the organ's per-phase level ``o_p``): the lesion's arterial enhancement
``a ~ U(0.4, 2.0)`` is drawn per case; class 1 ("washout", e.g. high grade) has delayed contrast ``d = a - 0.6``,
class 0 ("persistent") ``d = a``; the portal-venous phase sits in between. The class is the *change* ``d - a``,
so no single phase separates the classes (their per-phase ranges overlap) while any model that compares phases can.

``misregistration_voxels=n`` shifts the portal-venous and delayed phases of every case by a random integer offset in
``[-n, n]`` per axis (patients move between phases; the segmentation stays drawn on the arterial phase).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter

from nnunet_mvext.errors import MVExtError

logger = logging.getLogger(__name__)

PHASES = ("arterial", "portal_venous", "delayed")
CLASS_NAMES = {"0": "persistent", "1": "washout"}
ARTERIAL_RANGE = (0.4, 2.0)
WASHOUT_DROP = 0.6


@dataclass(frozen=True)
class SyntheticCase:
    """The ground truth behind one generated case."""

    case_id: str
    label: int
    arterial: float
    portal_venous: float
    delayed: float


@dataclass(frozen=True)
class SyntheticDataset:
    """Where a generated dataset lies."""

    dataset_name: str
    folder: str
    train_cases: tuple
    test_cases: tuple

    @property
    def images_ts(self) -> str:
        return os.path.join(self.folder, "imagesTs")

    @property
    def labels_ts(self) -> str:
        return os.path.join(self.folder, "labelsTs")


def lesion_contrasts(label: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """Lesion-minus-organ contrast in (arterial, portal-venous, delayed) for a case of class ``label``."""
    arterial = rng.uniform(*ARTERIAL_RANGE)
    delayed = arterial - WASHOUT_DROP if label == 1 else arterial
    portal = 0.5 * (arterial + delayed) + rng.normal(0, 0.05)
    return arterial, portal, delayed


def make_case(shape: Sequence[int], label: int, rng: np.random.Generator,
              misregistration_voxels: int = 0) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Images ``(3, *shape)`` float32, segmentation ``shape`` uint8 and the lesion contrasts of one case."""
    shape = tuple(int(s) for s in shape)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    size = np.array(shape, dtype=np.float32)
    organ_center = size / 2 + rng.uniform(-0.08, 0.08, 3) * size
    organ_radii = rng.uniform(0.28, 0.38, 3) * size
    organ = (((grid - organ_center[:, None, None, None]) / organ_radii[:, None, None, None]) ** 2).sum(0) <= 1

    lesion_radius = rng.uniform(0.08, 0.13) * size.min()
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    offset = direction * rng.uniform(0, 0.45) * (organ_radii.min() - lesion_radius)
    lesion_center = organ_center + offset
    lesion = (((grid - lesion_center[:, None, None, None]) ** 2).sum(0) <= lesion_radius ** 2) & organ

    seg = np.zeros(shape, dtype=np.uint8)
    seg[organ] = 1
    seg[lesion] = 2

    contrasts = lesion_contrasts(label, rng)
    organ_levels = np.array([1.0, 1.3, 1.1]) + rng.normal(0, 0.05, 3)
    bias = 1 + 0.1 * np.sin(grid[0] / size[0] * np.pi + rng.uniform(0, np.pi))
    images = np.empty((3, *shape), dtype=np.float32)
    for p in range(3):
        img = np.zeros(shape, dtype=np.float32)
        img[organ] = organ_levels[p]
        img[lesion] = organ_levels[p] + contrasts[p]
        img = gaussian_filter(img * bias, sigma=0.7) + rng.normal(0, 0.15, shape)
        if p > 0 and misregistration_voxels > 0:
            offset = rng.integers(-misregistration_voxels, misregistration_voxels + 1, size=3)
            img = np.roll(img, tuple(int(o) for o in offset), axis=(0, 1, 2))
        images[p] = img.astype(np.float32)
    return images, seg, contrasts


def _write(array: np.ndarray, path: str, spacing: Sequence[float]) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    sitk.WriteImage(image, path, useCompression=True)


def generate_multiphase_dataset(raw_folder: str, dataset_id: int = 501, dataset_name: str = "MVExtSynthetic",
                                num_train: int = 16, num_test: int = 6, shape: Sequence[int] = (40, 40, 40),
                                spacing: Sequence[float] = (1.0, 1.0, 1.0), seed: int = 0,
                                misregistration_voxels: int = 0) -> SyntheticDataset:
    """Write ``Dataset{id:03d}_{name}`` into ``raw_folder`` (nnU-Net raw layout) and return where it lies.

    Classes alternate so both are present in every split. Held-out cases go to ``imagesTs``/``labelsTs`` with their
    classes in ``labelsTs/classification.csv``. Refuses to write into an existing dataset folder.
    """
    if not 1 <= dataset_id <= 999:
        raise MVExtError(f"dataset_id must be in 1..999, got {dataset_id}.")
    if num_train < 5:
        raise MVExtError(f"num_train must be >= 5 for nnU-Net's 5-fold split, got {num_train}.")
    full_name = f"Dataset{dataset_id:03d}_{dataset_name}"
    folder = os.path.join(raw_folder, full_name)
    if os.path.exists(folder):
        raise MVExtError(f"Dataset folder {folder} already exists; refusing to overwrite it. "
                         f"Remove it or choose another dataset id.")
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        os.makedirs(os.path.join(folder, sub))

    rng = np.random.default_rng(seed)
    cases = {"Tr": [], "Ts": []}
    for split, count, start in (("Tr", num_train, 0), ("Ts", num_test, num_train)):
        for i in range(count):
            case_id = f"case_{start + i:03d}"
            label = i % 2
            images, seg, contrasts = make_case(shape, label, rng, misregistration_voxels)
            for p in range(3):
                _write(images[p], os.path.join(folder, f"images{split}", f"{case_id}_{p:04d}.nii.gz"), spacing)
            _write(seg, os.path.join(folder, f"labels{split}", f"{case_id}.nii.gz"), spacing)
            cases[split].append(SyntheticCase(case_id, label, *contrasts))
        logger.info("wrote %d %s cases to %s", count, "training" if split == "Tr" else "test", folder)

    dataset_json = {
        "channel_names": {str(i): name for i, name in enumerate(PHASES)},
        "labels": {"background": 0, "organ": 1, "lesion": 2},
        "numTraining": num_train,
        "file_ending": ".nii.gz",
        "name": full_name,
        "description": "Synthetic multi-phase contrast MRI generated by nnunet_mvext.synthetic_dataset",
        "classification": {"class_names": dict(CLASS_NAMES),
                           "labels": {c.case_id: c.label for c in cases["Tr"]}},
    }
    with open(os.path.join(folder, "dataset.json"), "w") as f:
        json.dump(dataset_json, f, indent=2)
    with open(os.path.join(folder, "labelsTs", "classification.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["case_id", "class"])
        writer.writerows([(c.case_id, c.label) for c in cases["Ts"]])
    with open(os.path.join(folder, "cases.json"), "w") as f:
        json.dump({split: [c.__dict__ for c in cs] for split, cs in cases.items()}, f, indent=1)
    return SyntheticDataset(full_name, folder, tuple(cases["Tr"]), tuple(cases["Ts"]))
