"""A one-channel synthetic dataset whose case class is a 3D shape that no single orthogonal view shows completely
(for the multi-view trainers; nnU-Net raw layout like
:func:`~nnunet_mvext.synthetic.multiphase.generate_multiphase_dataset`).

Each case: an ellipsoidal organ (label 1) holding a spherical lesion (label 2) of radius ``r`` and contrast
``c ~ U(0.6, 1.4)`` above the organ; class k in (:data:`SHAPE_CLASSES`):

====  ===============  ========================================================================================
k     name             image
====  ===============  ========================================================================================
0     round            the lesion alone
1     spike_axis0      plus a bright rod (a "spike", e.g. a feeding vessel) leaving the lesion along array axis 0
2     spike_axis1      ... along axis 1
3     spike_axis2      ... along axis 2
====  ===============  ========================================================================================

The rod starts at the lesion surface, runs away from the centre in a random direction (+ or -) along its axis for
``L ~ U(1.0, 1.6) r``, with radius ``rho ~ U(1.2, 1.6)`` (in units of the smallest voxel spacing) and contrast
``U(0.6, 1.4)`` (the lesion's range); it is drawn in the image only, the label map keeps organ or background there.

**Why one view cannot decide it.** The plane through the lesion centre perpendicular to axis a (view a) contains
the rods along the two other axes but does not meet a rod along axis a, which lies entirely on one side of it. So
view a sees ``round`` and ``spike_axis{a}`` alike (both: a disc) and separates only three of the four groups (at
best 75 % accuracy with balanced classes), while any two views together separate all four. The 3D patch holds
everything.

Geometry is drawn in physical units (voxel index times ``spacing``), so an anisotropic ``spacing`` gives the same
objects sampled more coarsely along one axis; the lesion centre sits on a voxel centre, so a thin rod is sampled
along a row of voxels even across thick slices. Noise, blur and a bias field as in the multi-phase generator.
Held-out cases go to ``imagesTs``/``labelsTs`` with ``labelsTs/classification.csv``; ``cases.json`` holds each case's
ground truth.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from nnunet_mvext.errors import MVExtError
from nnunet_mvext.synthetic.dataset_folder import SyntheticDataset, new_dataset_folder, write_dataset_files, write_image
from nnunet_mvext.synthetic.multiphase import _finish_phase, assign_classes

logger = logging.getLogger(__name__)

SHAPE_CLASSES = ("round", "spike_axis0", "spike_axis1", "spike_axis2")
CHANNEL = "T2"
LESION_RADIUS = (0.10, 0.15)      # fraction of the smallest physical extent
SPIKE_LENGTH = (1.0, 1.6)         # times the lesion radius
SPIKE_RADIUS = (1.2, 1.6)         # times the smallest voxel spacing
CONTRAST = (0.6, 1.4)


@dataclass(frozen=True)
class ShapeCase:
    """The ground truth behind one generated case (centre and lengths in voxels of axis 0..2 / physical units)."""

    case_id: str
    label: int
    class_name: str
    lesion_centre: tuple
    lesion_radius: float
    lesion_contrast: float
    spike_axis: Optional[int]
    spike_sign: int
    spike_length: float
    spike_contrast: float


def make_shape_case(shape: Sequence[int], spacing: Sequence[float], label: int, rng: np.random.Generator
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Image ``shape`` float32, segmentation uint8, the rod's voxel mask (bool; empty for ``round``) and the truth."""
    shape = tuple(int(s) for s in shape)
    spacing = np.asarray(spacing, dtype=np.float32)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) * sp for s, sp in zip(shape, spacing)],
                                indexing="ij"))                                    # (3, *shape) physical
    extent = np.array(shape, dtype=np.float32) * spacing
    organ_centre = extent / 2 + rng.uniform(-0.05, 0.05, 3) * extent
    organ_radii = rng.uniform(0.36, 0.44, 3) * extent
    organ = (((grid - organ_centre[:, None, None, None]) / organ_radii[:, None, None, None]) ** 2).sum(0) <= 1

    radius = float(rng.uniform(*LESION_RADIUS) * extent.min())
    spike_length = float(rng.uniform(*SPIKE_LENGTH) * radius)
    spike_radius = float(rng.uniform(*SPIKE_RADIUS) * spacing.min())
    margin = radius + spike_length + 2 * spacing.max()
    centre = np.clip(organ_centre + rng.uniform(-0.08, 0.08, 3) * extent, margin, extent - margin)
    centre = np.round(centre / spacing) * spacing   # on a voxel centre: the rod's axis runs along a row of voxels
    rel = grid - centre[:, None, None, None]
    lesion = (rel ** 2).sum(0) <= radius ** 2

    axis = None if label == 0 else label - 1
    sign = int(rng.choice((-1, 1)))
    spike = np.zeros(shape, dtype=bool)
    if axis is not None:
        along = sign * rel[axis]
        across = np.sqrt((rel ** 2).sum(0) - rel[axis] ** 2)
        spike = (along > radius) & (along <= radius + spike_length) & (across <= spike_radius)

    contrast, spike_contrast = float(rng.uniform(*CONTRAST)), float(rng.uniform(*CONTRAST))
    seg = np.zeros(shape, dtype=np.uint8)
    seg[organ] = 1
    seg[lesion] = 2
    img = np.zeros(shape, dtype=np.float32)
    img[organ] = 1.0
    img[lesion] = 1.0 + contrast
    img[spike] = 1.0 + spike_contrast
    bias = 1 + 0.1 * np.sin(grid[0] / extent[0] * np.pi + rng.uniform(0, np.pi))
    image = _finish_phase(img, bias, 0, rng, 0)
    truth = {"lesion_centre": tuple(float(c) for c in centre / spacing), "lesion_radius": radius,
             "lesion_contrast": contrast, "spike_axis": axis, "spike_sign": sign if axis is not None else 0,
             "spike_length": spike_length if axis is not None else 0.0,
             "spike_contrast": spike_contrast if axis is not None else 0.0}
    return image, seg, spike, truth


def generate_shape_dataset(raw_folder: str, dataset_id: int = 510, dataset_name: str = "MVExtShapes",
                           num_train: int = 40, num_test: int = 20, shape: Sequence[int] = (32, 32, 32),
                           spacing: Sequence[float] = (1.0, 1.0, 1.0), seed: int = 0) -> SyntheticDataset:
    """Write ``Dataset{id:03d}_{name}`` (one channel, four shape classes, balanced and stratified per split) into
    ``raw_folder`` and return where it lies. Refuses to write into an existing dataset folder."""
    if not 1 <= dataset_id <= 999:
        raise MVExtError(f"dataset_id must be in 1..999, got {dataset_id}.")
    if num_train < max(5, len(SHAPE_CLASSES)):
        raise MVExtError(f"num_train must be >= {max(5, len(SHAPE_CLASSES))} (nnU-Net's 5-fold split, one case per "
                         f"class), got {num_train}.")
    if len(shape) != 3 or min(shape) < 12:
        raise MVExtError(f"shape must be three sizes >= 12 voxels (room for the lesion and its spike), got "
                         f"{list(shape)}.")
    full_name, folder = new_dataset_folder(raw_folder, dataset_id, dataset_name)
    rng = np.random.default_rng(seed)
    label_rng = np.random.default_rng([seed, 1])
    priors = np.full(len(SHAPE_CLASSES), 1.0 / len(SHAPE_CLASSES))
    cases = {"Tr": [], "Ts": []}
    for split, count, start in (("Tr", num_train, 0), ("Ts", num_test, num_train)):
        for i, label in enumerate(assign_classes(count, priors, label_rng)):
            case_id = f"case_{start + i:03d}"
            image, seg, _, truth = make_shape_case(shape, spacing, label, rng)
            write_image(image, os.path.join(folder, f"images{split}", f"{case_id}_0000.nii.gz"), spacing)
            write_image(seg, os.path.join(folder, f"labels{split}", f"{case_id}.nii.gz"), spacing)
            cases[split].append(ShapeCase(case_id, label, SHAPE_CLASSES[label], **truth))
        logger.info("wrote %d %s cases to %s", count, "training" if split == "Tr" else "test", folder)
    dataset_json = {
        "channel_names": {"0": CHANNEL},
        "labels": {"background": 0, "organ": 1, "lesion": 2},
        "numTraining": num_train,
        "file_ending": ".nii.gz",
        "name": full_name,
        "description": "Synthetic one-channel shapes (lesion with a spike along one axis) generated by "
                       "nnunet_mvext.synthetic.shapes",
        "classification": {"class_names": {str(k): n for k, n in enumerate(SHAPE_CLASSES)},
                           "labels": {c.case_id: c.label for c in cases["Tr"]}},
    }
    write_dataset_files(folder, dataset_json, cases)
    return SyntheticDataset(full_name, folder, tuple(cases["Tr"]), tuple(cases["Ts"]), (CHANNEL,), SHAPE_CLASSES)
