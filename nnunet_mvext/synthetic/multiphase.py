"""A small synthetic multi-phase contrast MRI dataset in nnU-Net's raw format (used by the demo and the tests).

**Binary mode (the default, ``num_phases=3, num_classes=2``).** Each case has three channels (``_0000`` arterial,
``_0001`` portal-venous, ``_0002`` delayed), a segmentation (0 background, 1 organ, 2 lesion) and a case class
stored in ``dataset.json`` under ``"classification"``.

Intensities (before noise, relative to the organ's per-phase level ``o_p``): the lesion's arterial enhancement
``a ~ U(0.4, 2.0)`` is drawn per case; class 1 ("washout", e.g. high grade) has delayed contrast ``d = a - 0.6``,
class 0 ("persistent") ``d = a``; the portal-venous phase sits in between. The class is the *change* ``d - a``,
so no single phase separates the classes (their per-phase ranges overlap) while any model that compares phases can.

**Multi-class mode (any other ``num_phases`` P >= 2 / ``num_classes`` K in 2..7).** Class k is an enhancement curve
``s_k`` over the phases (:data:`ENHANCEMENT_PATTERNS`, knots on the phase position ``t_p = p / (P - 1)``, linearly
interpolated, then centred over the P phases and scaled to a peak-to-peak range of 1; the flat classes stay 0):

====  ===============  ================================================================================
k     name             lesion core contrast over the phases
====  ===============  ================================================================================
0     persistent       flat
1     washout          falls linearly from the first to the last phase
2     fill_in          rises linearly (progressive fill-in)
3     rim              core flat; the boundary shell enhances in the first half of the phases, not later
4     early_peak       rises to a peak at t = 0.25, then falls
5     plateau          rises until t = 0.3, then stays
6     late_peak        rises to a peak at t = 0.75, then falls part of the way
====  ===============  ================================================================================

A case's lesion-minus-organ contrast in phase p is ``core_p = offset + A * s_k(t_p) + N(0, 0.05)`` with a per-case
``offset ~ U(-0.5, 1.5)`` and amplitude ``A ~ U(0.6, 1.2)``: the offset range is wider than any class's change, so
one phase's lesion contrast does not separate the classes, while the shape of the curve over the phases does. The
lesion's boundary shell (the outer ~40 % of its radius) has ``shell_p = core_p + c`` with a per-case static
``c ~ U(-0.3, 0.9)`` for every class (a capsule that may look bright in any one phase); only the rim class adds
``A_rim * r(t_p)``, ``A_rim ~ U(0.6, 1.2)``, ``r`` the centred shell curve. So rim, too, is decided by comparing
phases. The organ's level follows ``1 + 0.3 sin(pi t_p) + N(0, 0.05)``. :func:`max_classes` says how many classes
stay distinguishable with P phases (2 phases: 4 classes, 3 phases: 6, 4 or more: all 7); more is refused.

Channel names: today's ``arterial, portal_venous, delayed`` for P = 3, ``arterial, delayed`` for P = 2,
``phase_0 .. phase_{P-1}`` for P >= 4.

**Class priors and splits.** ``class_priors`` (K positive weights, normalised) sets the class frequencies; each split
gets ``round(n * prior)`` cases per class by largest remainder, at least one per class when the split has K cases or
more (a smaller held-out split is warned about: it cannot hold every class; a training split smaller than K is
refused), in a random order. Without ``class_priors`` the binary mode alternates the classes as it always did and the
multi-class mode uses uniform priors.

**Box labels.** ``box_labels=True`` writes the lesion label as the filled axis-aligned bounding box of the lesion
(overwriting organ and background voxels inside it); the images are the same as without it.

``misregistration_voxels=n`` shifts every phase after the first of every case by a random integer offset in
``[-n, n]`` per axis (patients move between phases; the segmentation stays drawn on the first phase).

``cases.json`` holds each case's ground truth (binary mode: the lesion contrast per phase by phase name; multi-class
mode: ``class_name``, ``core_contrast``, ``shell_contrast``, ``organ_level`` per phase, ``offset``, ``amplitude``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

from nnunet_mvext.errors import MVExtError
from nnunet_mvext.synthetic.dataset_folder import SyntheticDataset, new_dataset_folder, write_dataset_files, write_image

logger = logging.getLogger(__name__)

PHASES = ("arterial", "portal_venous", "delayed")
CLASS_NAMES = {"0": "persistent", "1": "washout"}
ARTERIAL_RANGE = (0.4, 2.0)
WASHOUT_DROP = 0.6

# class name -> knots (t, s) of its core enhancement curve over the phase position t in [0, 1]
ENHANCEMENT_PATTERNS = {
    "persistent": ((0.0, 0.0), (1.0, 0.0)),
    "washout": ((0.0, 1.0), (1.0, 0.0)),
    "fill_in": ((0.0, 0.0), (1.0, 1.0)),
    "rim": ((0.0, 0.0), (1.0, 0.0)),
    "early_peak": ((0.0, 0.3), (0.25, 1.0), (1.0, 0.0)),
    "plateau": ((0.0, 0.0), (0.3, 1.0), (1.0, 1.0)),
    "late_peak": ((0.0, 0.0), (0.75, 1.0), (1.0, 0.4)),
}
RIM_SHELL_PATTERN = ((0.0, 1.0), (0.5, 1.0), (0.75, 0.0), (1.0, 0.0))
OFFSET_RANGE = (-0.5, 1.5)
AMPLITUDE_RANGE = (0.6, 1.2)
SHELL_STATIC_RANGE = (-0.3, 0.9)
SHELL_FRACTION = 0.4
MAX_PATTERN_COSINE = 0.9


@dataclass(frozen=True)
class SyntheticCase:
    """The ground truth behind one generated case of the binary mode."""

    case_id: str
    label: int
    arterial: float
    portal_venous: float
    delayed: float


@dataclass(frozen=True)
class SyntheticMultiClassCase:
    """The ground truth behind one generated case of the multi-class mode (per-phase tuples, lesion minus organ)."""

    case_id: str
    label: int
    class_name: str
    core_contrast: tuple
    shell_contrast: tuple
    organ_level: tuple
    offset: float
    amplitude: float


def channel_names(num_phases: int) -> tuple:
    """``arterial, delayed`` (P = 2), ``arterial, portal_venous, delayed`` (P = 3), ``phase_0 ..`` (P >= 4)."""
    if num_phases == 2:
        return ("arterial", "delayed")
    if num_phases == 3:
        return PHASES
    return tuple(f"phase_{p}" for p in range(num_phases))


def _interpolate(knots: Sequence[tuple], num_phases: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, num_phases)
    x, y = zip(*knots)
    return np.interp(t, x, y)


def _centred_unit_range(curve: np.ndarray) -> np.ndarray:
    """``curve`` minus its mean over the phases, scaled to a peak-to-peak range of 1 (a flat curve stays 0)."""
    centred = curve - curve.mean()
    span = np.ptp(centred)
    return centred / span if span > 1e-9 else np.zeros_like(centred)


def pattern_curves(num_phases: int, num_classes: int) -> np.ndarray:
    """``(K, P)`` centred core enhancement curves ``s_k(t_p)`` of the first ``num_classes`` patterns."""
    names = list(ENHANCEMENT_PATTERNS)[:num_classes]
    return np.stack([_centred_unit_range(_interpolate(ENHANCEMENT_PATTERNS[n], num_phases)) for n in names])


def rim_shell_curve(num_phases: int) -> np.ndarray:
    """``(P,)`` the centred extra enhancement of the rim class's boundary shell."""
    return _centred_unit_range(_interpolate(RIM_SHELL_PATTERN, num_phases))


def _distinguishable(num_phases: int, num_classes: int) -> bool:
    """Every two non-flat core curves differ in shape (cosine < 0.9); the flat ones differ by flatness or the rim."""
    curves = pattern_curves(num_phases, num_classes)
    norms = np.linalg.norm(curves, axis=1)
    for i in range(num_classes):
        for j in range(i):
            if norms[i] > 1e-9 and norms[j] > 1e-9 and curves[i] @ curves[j] / norms[i] / norms[j] > MAX_PATTERN_COSINE:
                return False
    return np.ptp(rim_shell_curve(num_phases)) > 0 or num_classes <= list(ENHANCEMENT_PATTERNS).index("rim")


def max_classes(num_phases: int) -> int:
    """The largest K whose patterns stay distinguishable over ``num_phases`` phases (2: 4, 3: 6, >= 4: 7)."""
    return max(k for k in range(2, len(ENHANCEMENT_PATTERNS) + 1) if _distinguishable(num_phases, k))


def stratified_class_counts(num_cases: int, priors: np.ndarray) -> np.ndarray:
    """Cases per class for a split of ``num_cases``: largest remainder of ``num_cases * priors``, at least one per
    class when ``num_cases >= K`` (taken from the classes with the most cases)."""
    quota = num_cases * priors
    counts = np.floor(quota).astype(int)
    for k in np.argsort(-(quota - counts), kind="stable")[:num_cases - counts.sum()]:
        counts[k] += 1
    if num_cases >= len(priors):
        for k in np.flatnonzero(counts == 0):
            counts[int(np.argmax(counts))] -= 1
            counts[k] = 1
    return counts


def assign_classes(num_cases: int, priors: np.ndarray, rng: np.random.Generator) -> list[int]:
    """Class labels of a split: :func:`stratified_class_counts` per class, in random order."""
    labels = np.repeat(np.arange(len(priors)), stratified_class_counts(num_cases, priors))
    return [int(v) for v in rng.permutation(labels)]


def lesion_contrasts(label: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """Lesion-minus-organ contrast in (arterial, portal-venous, delayed) for a case of class ``label``."""
    arterial = rng.uniform(*ARTERIAL_RANGE)
    delayed = arterial - WASHOUT_DROP if label == 1 else arterial
    portal = 0.5 * (arterial + delayed) + rng.normal(0, 0.05)
    return arterial, portal, delayed


def _organ_and_lesion(shape: tuple, rng: np.random.Generator):
    """The voxel grid ``(3, *shape)``, organ and lesion masks, and the lesion's centre and radius (voxels)."""
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
    return grid, organ, lesion, lesion_center, lesion_radius


def _segmentation(organ: np.ndarray, lesion: np.ndarray) -> np.ndarray:
    seg = np.zeros(organ.shape, dtype=np.uint8)
    seg[organ] = 1
    seg[lesion] = 2
    return seg


def _finish_phase(img: np.ndarray, bias: np.ndarray, p: int, rng: np.random.Generator,
                  misregistration_voxels: int) -> np.ndarray:
    """Bias field, blur, noise and (phases after the first) a random shift of one phase's image."""
    img = gaussian_filter(img * bias, sigma=0.7) + rng.normal(0, 0.15, img.shape)
    if p > 0 and misregistration_voxels > 0:
        offset = rng.integers(-misregistration_voxels, misregistration_voxels + 1, size=3)
        img = np.roll(img, tuple(int(o) for o in offset), axis=(0, 1, 2))
    return img.astype(np.float32)


def make_case(shape: Sequence[int], label: int, rng: np.random.Generator,
              misregistration_voxels: int = 0) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Binary mode: images ``(3, *shape)`` float32, segmentation ``shape`` uint8 and the lesion contrasts."""
    shape = tuple(int(s) for s in shape)
    grid, organ, lesion, _, _ = _organ_and_lesion(shape, rng)
    seg = _segmentation(organ, lesion)

    contrasts = lesion_contrasts(label, rng)
    organ_levels = np.array([1.0, 1.3, 1.1]) + rng.normal(0, 0.05, 3)
    bias = 1 + 0.1 * np.sin(grid[0] / shape[0] * np.pi + rng.uniform(0, np.pi))
    images = np.empty((3, *shape), dtype=np.float32)
    for p in range(3):
        img = np.zeros(shape, dtype=np.float32)
        img[organ] = organ_levels[p]
        img[lesion] = organ_levels[p] + contrasts[p]
        images[p] = _finish_phase(img, bias, p, rng, misregistration_voxels)
    return images, seg, contrasts


def make_multiclass_case(shape: Sequence[int], label: int, num_phases: int, num_classes: int,
                         rng: np.random.Generator, misregistration_voxels: int = 0
                         ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Multi-class mode: images ``(P, *shape)`` float32, segmentation ``shape`` uint8 and the case's ground truth
    (``core_contrast``, ``shell_contrast``, ``organ_level`` per phase, ``offset``, ``amplitude``)."""
    shape = tuple(int(s) for s in shape)
    grid, organ, lesion, lesion_center, lesion_radius = _organ_and_lesion(shape, rng)
    seg = _segmentation(organ, lesion)
    distance = np.sqrt(((grid - lesion_center[:, None, None, None]) ** 2).sum(0))
    shell = lesion & (distance > (1 - SHELL_FRACTION) * lesion_radius)
    core = lesion & ~shell

    curve = pattern_curves(num_phases, num_classes)[label]
    offset, amplitude = rng.uniform(*OFFSET_RANGE), rng.uniform(*AMPLITUDE_RANGE)
    core_contrast = offset + amplitude * curve + rng.normal(0, 0.05, num_phases)
    shell_contrast = core_contrast + rng.uniform(*SHELL_STATIC_RANGE)
    if list(ENHANCEMENT_PATTERNS)[label] == "rim":
        shell_contrast = shell_contrast + rng.uniform(*AMPLITUDE_RANGE) * rim_shell_curve(num_phases)
    t = np.linspace(0.0, 1.0, num_phases)
    organ_level = 1.0 + 0.3 * np.sin(np.pi * t) + rng.normal(0, 0.05, num_phases)
    bias = 1 + 0.1 * np.sin(grid[0] / shape[0] * np.pi + rng.uniform(0, np.pi))
    images = np.empty((num_phases, *shape), dtype=np.float32)
    for p in range(num_phases):
        img = np.zeros(shape, dtype=np.float32)
        img[organ] = organ_level[p]
        img[core] = organ_level[p] + core_contrast[p]
        img[shell] = organ_level[p] + shell_contrast[p]
        images[p] = _finish_phase(img, bias, p, rng, misregistration_voxels)
    truth = {"core_contrast": tuple(float(v) for v in core_contrast),
             "shell_contrast": tuple(float(v) for v in shell_contrast),
             "organ_level": tuple(float(v) for v in organ_level), "offset": float(offset),
             "amplitude": float(amplitude)}
    return images, seg, truth


def box_segmentation(seg: np.ndarray, lesion_label: int = 2) -> np.ndarray:
    """``seg`` with ``lesion_label`` replaced by the filled axis-aligned bounding box of its voxels."""
    out = seg.copy()
    where = np.nonzero(seg == lesion_label)
    if where[0].size:
        out[tuple(slice(int(w.min()), int(w.max()) + 1) for w in where)] = lesion_label
    return out


def _validated_priors(class_priors: Optional[Sequence[float]], num_classes: int) -> Optional[np.ndarray]:
    if class_priors is None:
        return None
    try:
        priors = np.array([float(v) for v in class_priors], dtype=float)
    except (TypeError, ValueError):
        raise MVExtError(f"class_priors {list(class_priors)}: every prior must be a number.") from None
    if priors.shape != (num_classes,):
        raise MVExtError(f"class_priors has {priors.size} values; num_classes is {num_classes}, give one per class.")
    if not np.all(np.isfinite(priors)) or np.any(priors <= 0):
        raise MVExtError(f"class_priors {priors.tolist()}: every prior must be a positive number (they are "
                         f"normalised to sum 1).")
    return priors / priors.sum()


def generate_multiphase_dataset(raw_folder: str, dataset_id: int = 501, dataset_name: str = "MVExtSynthetic",
                                num_train: int = 16, num_test: int = 6, shape: Sequence[int] = (40, 40, 40),
                                spacing: Sequence[float] = (1.0, 1.0, 1.0), seed: int = 0,
                                misregistration_voxels: int = 0, *, num_phases: int = 3, num_classes: int = 2,
                                class_priors: Optional[Sequence[float]] = None,
                                box_labels: bool = False) -> SyntheticDataset:
    """Write ``Dataset{id:03d}_{name}`` into ``raw_folder`` (nnU-Net raw layout) and return where it lies.

    ``num_phases=3, num_classes=2`` is the binary mode (the same output for the same seed as it always had, when
    ``class_priors`` and ``box_labels`` are not given; the classes alternate so both are present in every split);
    anything else is the multi-class mode of the module docstring. ``class_priors``: K positive class weights, split
    by :func:`stratified_class_counts`. ``box_labels``: the lesion label is its filled bounding box. Held-out cases
    go to ``imagesTs``/``labelsTs`` with their classes in ``labelsTs/classification.csv``; the ground truth of every
    case is in ``cases.json``. Refuses to write into an existing dataset folder.
    """
    if not 1 <= dataset_id <= 999:
        raise MVExtError(f"dataset_id must be in 1..999, got {dataset_id}.")
    if num_train < 5:
        raise MVExtError(f"num_train must be >= 5 for nnU-Net's 5-fold split, got {num_train}.")
    if num_phases < 2:
        raise MVExtError(f"num_phases must be >= 2 (the class is decided by comparing phases), got {num_phases}.")
    if not 2 <= num_classes <= len(ENHANCEMENT_PATTERNS):
        raise MVExtError(f"num_classes must be in 2..{len(ENHANCEMENT_PATTERNS)} (patterns: "
                         f"{', '.join(ENHANCEMENT_PATTERNS)}), got {num_classes}.")
    if num_classes > max_classes(num_phases):
        raise MVExtError(f"num_classes {num_classes} with num_phases {num_phases}: at most {max_classes(num_phases)} "
                         f"enhancement patterns stay distinguishable over {num_phases} phases; use more phases or "
                         f"fewer classes.")
    if misregistration_voxels < 0:
        raise MVExtError(f"misregistration_voxels must be >= 0, got {misregistration_voxels}.")
    priors = _validated_priors(class_priors, num_classes)
    binary = num_phases == 3 and num_classes == 2
    if num_train < num_classes:
        raise MVExtError(f"num_train {num_train} < num_classes {num_classes}: every class needs a training case.")
    full_name, folder = new_dataset_folder(raw_folder, dataset_id, dataset_name)

    names = channel_names(num_phases)
    class_names = list(ENHANCEMENT_PATTERNS)[:num_classes]
    rng = np.random.default_rng(seed)
    label_rng = np.random.default_rng([seed, 1])
    split_labels = {}
    for split, count in (("Tr", num_train), ("Ts", num_test)):
        if priors is None and binary:
            split_labels[split] = [i % 2 for i in range(count)]
        else:
            split_labels[split] = assign_classes(count, priors if priors is not None else
                                                 np.full(num_classes, 1.0 / num_classes), label_rng)
    cases = {"Tr": [], "Ts": []}
    for split, count, start in (("Tr", num_train, 0), ("Ts", num_test, num_train)):
        for i in range(count):
            case_id = f"case_{start + i:03d}"
            label = split_labels[split][i]
            if binary:
                images, seg, contrasts = make_case(shape, label, rng, misregistration_voxels)
                case = SyntheticCase(case_id, label, *contrasts)
            else:
                images, seg, truth = make_multiclass_case(shape, label, num_phases, num_classes, rng,
                                                          misregistration_voxels)
                case = SyntheticMultiClassCase(case_id, label, class_names[label], **truth)
            if box_labels:
                seg = box_segmentation(seg)
            for p in range(num_phases):
                write_image(images[p], os.path.join(folder, f"images{split}", f"{case_id}_{p:04d}.nii.gz"), spacing)
            write_image(seg, os.path.join(folder, f"labels{split}", f"{case_id}.nii.gz"), spacing)
            cases[split].append(case)
        logger.info("wrote %d %s cases to %s", count, "training" if split == "Tr" else "test", folder)
    missing = [class_names[k] for k in range(num_classes) if k not in {c.label for c in cases["Ts"]}]
    if num_test and missing:
        logger.warning("the held-out set (%d cases) has no case of class(es) %s; give num_test >= num_classes (%d) "
                       "for one of each.", num_test, ", ".join(missing), num_classes)

    description = "Synthetic multi-phase contrast MRI generated by nnunet_mvext.synthetic.multiphase"
    if box_labels:
        description += "; the lesion label is the filled bounding box of the lesion"
    dataset_json = {
        "channel_names": {str(i): name for i, name in enumerate(names)},
        "labels": {"background": 0, "organ": 1, "lesion": 2},
        "numTraining": num_train,
        "file_ending": ".nii.gz",
        "name": full_name,
        "description": description,
        "classification": {"class_names": {str(k): n for k, n in enumerate(class_names)},
                           "labels": {c.case_id: c.label for c in cases["Tr"]}},
    }
    write_dataset_files(folder, dataset_json, cases)
    return SyntheticDataset(full_name, folder, tuple(cases["Tr"]), tuple(cases["Ts"]), tuple(names),
                            tuple(class_names), box_labels)
