"""A synthetic LLD-MMRI 2023 release in the official layout (``nnunet-mvext make-lld-mock``), for tests and the
README walkthrough. It is not a model of liver MRI; it has the properties of the release that the import must
handle:

- eight series per patient (:data:`~nnunet_mvext.lld_mmri.annotation.PHASES`), **each on its own grid**: in-plane
  spacing ``U(1.5, 2.0)`` mm, slice spacing ``U(2.0, 3.5)`` mm, a field of view of ``U(80, 92)`` mm in-plane and
  ``U(80, 96)`` mm along z (so 40..62 voxels in-plane, 23..48 slices), the grid's centre ``U(-8, 8)`` mm off the
  patient's centre per axis; identity direction, int16 voxels; lesions are spheres of radius ``U(5, 9)`` mm;
- **misregistration**: the anatomy of each phase is shifted by ``U(-m, m)`` mm per axis (``misregistration_mm``,
  default 6), independently per phase (patients breathe and move between phases);
- **boxes per series** in the challenge's convention (x, y max exclusive, z max inclusive; see
  :mod:`~nnunet_mvext.lld_mmri.annotation`), the lesion's true extent in that series plus the annotators' jitter: each
  of the six bounds moved by a random integer in ``[-box_jitter, box_jitter]`` voxels (default 2), drawn from a
  random stream of its own (one seed gives the same images for every ``box_jitter``);
- several lesions (2 or 3, same category) for a fraction of the patients (``multi_lesion_fraction``, default 0.3);
- unreleased patients: category -1 for a fraction of them (``unreleased_fraction``, default 0.2);
- with ``defects`` (default), entries like those the challenge's own crop code skips: in patient 1 the T2WI box of
  lesion 0 lies beyond the slice count, in patient 2 the DWI series file is unreadable, and patient 3 has no
  ``Out Phase`` series at all (a missing phase).

**Intensities** follow the multi-class synthetic data of :mod:`nnunet_mvext.synthetic_dataset` (its enhancement
patterns, offsets, amplitudes and rim shell, over the eight phases in the order above): class ``k`` of the release is
that module's pattern ``k`` (persistent, washout, fill_in, rim, early_peak, plateau, late_peak), i.e. the class is
decided by comparing phases, as there. A patient's lesions share its class, offset and amplitude; each draws its own
``N(0, 0.05)`` contrast noise. The liver is an ellipsoid at ``1 + 0.3 sin(pi t_p)``; blur ``sigma = 0.7`` voxels,
noise ``N(0, 0.15)``, stored as ``round(100 * value)``.

``mock_truth.json`` (next to ``images/`` and ``labels/``, not part of a release) holds what the mock knows: per patient
the class, whether it was released, every lesion's centre and radius (mm, the patient frame), every phase's shift
(mm) and the defects placed. A lesion's centre in the physical space of phase ``p`` is ``centre + shift[p]``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter

from nnunet_mvext.errors import MVExtError
from nnunet_mvext.lld_mmri.annotation import CLASS_NAMES, PHASES, UNRELEASED
from nnunet_mvext.synthetic_dataset import (
    AMPLITUDE_RANGE,
    ENHANCEMENT_PATTERNS,
    OFFSET_RANGE,
    SHELL_FRACTION,
    SHELL_STATIC_RANGE,
    assign_classes,
    pattern_curves,
    rim_shell_curve,
)

logger = logging.getLogger(__name__)

TRUTH_FILE = "mock_truth.json"
INPLANE_SPACING = (1.5, 2.0)
SLICE_SPACING = (2.0, 3.5)
INPLANE_FOV = (80.0, 92.0)
SLICE_FOV = (80.0, 96.0)
GRID_OFFSET_MM = 8.0
LIVER_RADII = ((26.0, 34.0), (26.0, 34.0), (24.0, 30.0))
LESION_RADIUS = (5.0, 9.0)
DEFECTS = ((1, "T2WI", "box beyond the slice count"), (2, "DWI", "unreadable series file"),
           (3, "Out Phase", "missing phase"))


@dataclass(frozen=True)
class MockRelease:
    """Where a generated release lies, its patients and the ground truth file."""

    folder: str
    patients: tuple
    truth_file: str

    def truth(self) -> dict:
        with open(self.truth_file) as f:
            return json.load(f)


def _grid(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(size, spacing, origin)`` of one series (ITK order x, y, z), the grid centred near the patient's centre."""
    inplane = rng.uniform(*INPLANE_SPACING)
    spacing = np.array([inplane, inplane, rng.uniform(*SLICE_SPACING)])
    fov = np.array([rng.uniform(*INPLANE_FOV)] * 2 + [rng.uniform(*SLICE_FOV)])
    size = np.ceil(fov / spacing).astype(int)
    centre = rng.uniform(-GRID_OFFSET_MM, GRID_OFFSET_MM, 3)
    origin = centre - spacing * (size - 1) / 2
    return size, spacing, origin


def _lesions(rng: np.random.Generator, liver_radii: np.ndarray, count: int) -> list[tuple[np.ndarray, float]]:
    """``count`` non-overlapping spheres ``(centre, radius)`` (mm) well inside the liver (fewer when 1000 draws do not
    place them all)."""
    lesions: list[tuple[np.ndarray, float]] = []
    for _ in range(1000):
        if len(lesions) == count:
            break
        radius = rng.uniform(*LESION_RADIUS)
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        centre = direction * rng.uniform(0, 0.8) * (liver_radii.min() - radius)
        if all(np.linalg.norm(centre - c) > radius + r + 2.0 for c, r in lesions):
            lesions.append((centre, radius))
    return lesions


def _box(centre: np.ndarray, radius: float, size: np.ndarray, spacing: np.ndarray, origin: np.ndarray,
         jitter: int, rng: np.random.Generator) -> dict:
    """The lesion's voxel extent in one series (challenge convention) with each bound jittered, clipped to the
    image and at least one voxel wide."""
    lo = np.rint((centre - radius - origin) / spacing).astype(int)
    hi = np.rint((centre + radius - origin) / spacing).astype(int)
    lo = lo + rng.integers(-jitter, jitter + 1, 3)
    hi = hi + rng.integers(-jitter, jitter + 1, 3)
    lo = np.clip(lo, 0, size - 1)
    hi = np.clip(np.maximum(hi, lo), 0, size - 1)
    return {"x_min": int(lo[0]), "y_min": int(lo[1]), "z_min": int(lo[2]),
            "x_max": int(hi[0]) + 1, "y_max": int(hi[1]) + 1, "z_max": int(hi[2])}


def _series_image(size: np.ndarray, spacing: np.ndarray, origin: np.ndarray, shift: np.ndarray,
                  liver_radii: np.ndarray, lesions: list, p: int, levels: dict,
                  rng: np.random.Generator) -> sitk.Image:
    """One phase's int16 image: liver, lesion cores and shells at the phase's levels, shifted by ``shift`` mm."""
    axes = [origin[a] + spacing[a] * np.arange(size[a]) - shift[a] for a in range(3)]
    z, y, x = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")  # numpy order z, y, x; patient frame (mm)
    img = np.zeros(tuple(size[::-1]), dtype=np.float32)
    liver = (x / liver_radii[0]) ** 2 + (y / liver_radii[1]) ** 2 + (z / liver_radii[2]) ** 2 <= 1
    img[liver] = levels["organ"][p]
    for i, (centre, radius) in enumerate(lesions):
        distance = np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2)
        lesion = distance <= radius
        shell = lesion & (distance > (1 - SHELL_FRACTION) * radius)
        img[lesion & ~shell] = levels["organ"][p] + levels["core"][i][p]
        img[shell] = levels["organ"][p] + levels["shell"][i][p]
    bias = 1 + 0.1 * np.sin(x / 40.0 * np.pi + levels["bias_phase"])
    img = gaussian_filter(img * bias, sigma=0.7) + rng.normal(0, 0.15, img.shape)
    image = sitk.GetImageFromArray(np.rint(100 * img).astype(np.int16))
    image.SetSpacing(tuple(float(v) for v in spacing))
    image.SetOrigin(tuple(float(v) for v in origin))
    return image


def _levels(label: int, n_lesions: int, rng: np.random.Generator) -> dict:
    """Per-phase organ level and, per lesion, core and shell contrast (lesion minus organ) of class ``label``."""
    num_phases = len(PHASES)
    curve = pattern_curves(num_phases, len(ENHANCEMENT_PATTERNS))[label]
    offset, amplitude = rng.uniform(*OFFSET_RANGE), rng.uniform(*AMPLITUDE_RANGE)
    static = rng.uniform(*SHELL_STATIC_RANGE)
    rim = rng.uniform(*AMPLITUDE_RANGE) * rim_shell_curve(num_phases) \
        if list(ENHANCEMENT_PATTERNS)[label] == "rim" else np.zeros(num_phases)
    cores = [offset + amplitude * curve + rng.normal(0, 0.05, num_phases) for _ in range(n_lesions)]
    t = np.linspace(0.0, 1.0, num_phases)
    return {"organ": 1.0 + 0.3 * np.sin(np.pi * t) + rng.normal(0, 0.05, num_phases), "core": cores,
            "shell": [c + static + rim for c in cores], "bias_phase": rng.uniform(0, np.pi)}


def generate_mock_release(out_dir: str, num_patients: int = 12, seed: int = 0, *, unreleased_fraction: float = 0.2,
                          multi_lesion_fraction: float = 0.3, misregistration_mm: float = 6.0, box_jitter: int = 2,
                          defects: bool = True, patient_prefix: str = "MR") -> MockRelease:
    """Write a mock release into ``out_dir`` (``images/``, ``labels/Annotation.json``, ``mock_truth.json``); refuses
    an existing non-empty folder. Classes are balanced over the patients (each of the 7 once before any twice), the
    unreleased ones are a random subset."""
    if num_patients < 1:
        raise MVExtError(f"--patients must be >= 1, got {num_patients}.")
    if defects and num_patients < 4:
        raise MVExtError(f"the defects go to patients 1, 2 and 3: give --patients >= 4 or --no-defects "
                         f"(got {num_patients}).")
    for name, value in (("unreleased_fraction", unreleased_fraction), ("multi_lesion_fraction",
                                                                       multi_lesion_fraction)):
        if not 0 <= value <= 1:
            raise MVExtError(f"{name} must be in [0, 1], got {value}.")
    if misregistration_mm < 0 or box_jitter < 0:
        raise MVExtError(f"misregistration_mm ({misregistration_mm}) and box_jitter ({box_jitter}) must be >= 0.")
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise MVExtError(f"{out_dir} exists and is not an empty folder; refusing to write a mock release into it.")

    rng = np.random.default_rng(seed)
    jitter_rng = np.random.default_rng([seed, 1])  # apart, so that the images do not depend on box_jitter
    labels = assign_classes(num_patients, np.full(len(CLASS_NAMES), 1.0 / len(CLASS_NAMES)), rng)
    unreleased = set(rng.choice(num_patients, int(round(unreleased_fraction * num_patients)), replace=False).tolist())
    multi = set(rng.choice(num_patients, int(round(multi_lesion_fraction * num_patients)), replace=False).tolist())
    defect_of = {i: (phase, kind) for i, phase, kind in DEFECTS} if defects else {}

    annotation, truth, patients = {}, {}, []
    for i in range(num_patients):
        patient = f"{patient_prefix}{100000 + 37 * i}"
        patients.append(patient)
        label = labels[i]
        liver_radii = np.array([rng.uniform(*r) for r in LIVER_RADII])
        lesions = _lesions(rng, liver_radii, int(rng.integers(2, 4)) if i in multi else 1)
        levels = _levels(label, len(lesions), rng)
        study = f"1.2.826.0.1.{seed}.{i}"
        category = UNRELEASED if i in unreleased else label
        entries, shifts = [], {}
        defect = defect_of.get(i)
        for p, phase in enumerate(PHASES):
            shift = rng.uniform(-misregistration_mm, misregistration_mm, 3)
            size, spacing, origin = _grid(rng)
            shifts[phase] = shift.tolist()
            if defect == (phase, "missing phase"):
                continue
            series = f"1.2.826.0.2.{seed}.{i}.{p}.{int(rng.integers(1e6))}"
            folder = os.path.join(out_dir, "images", patient, study)
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, series + ".nii.gz")
            image = _series_image(size, spacing, origin, shift, liver_radii, lesions, p, levels, rng)
            if defect == (phase, "unreadable series file"):
                with open(path, "wb") as f:
                    f.write(b"not a NIfTI file: a truncated download\n")
            else:
                sitk.WriteImage(image, path, useCompression=True)
            boxes = {}
            for k, (centre, radius) in enumerate(lesions):
                box = _box(centre + shift, radius, size, spacing, origin, box_jitter, jitter_rng)
                if k == 0 and defect == (phase, "box beyond the slice count"):
                    box["z_min"], box["z_max"] = int(size[2]) + 2, int(size[2]) + 5
                boxes[str(k)] = {"category": category, "bbox": {"3D_box": box}}
            entries.append({"studyUID": study, "seriesUID": series, "phase": phase,
                            "pixel_spacing": [float(spacing[0]), float(spacing[1])],
                            "slice_thickness": float(spacing[2]), "annotation": {"lesion": boxes}})
        order = rng.permutation(len(entries))
        annotation[patient] = [entries[j] for j in order]
        truth[patient] = {"class": label, "class_name": CLASS_NAMES[label], "released": i not in unreleased,
                          "lesions": [{"index": str(k), "centre_mm": c.tolist(), "radius_mm": float(r)}
                                      for k, (c, r) in enumerate(lesions)],
                          "shift_mm": shifts,
                          "defects": [{"phase": defect[0], "kind": defect[1]}] if defect else []}
    os.makedirs(os.path.join(out_dir, "labels"), exist_ok=True)
    with open(os.path.join(out_dir, "labels", "Annotation.json"), "w") as f:
        json.dump({"Annotation_info": annotation}, f, indent=1)
    truth_file = os.path.join(out_dir, TRUTH_FILE)
    with open(truth_file, "w") as f:
        json.dump({"seed": seed, "misregistration_mm": misregistration_mm, "box_jitter": box_jitter,
                   "patients": truth}, f, indent=1)
    logger.info("Wrote a mock release of %d patients (%d unreleased, %d with several lesions%s) to %s",
                num_patients, len(unreleased), len(multi),
                ", defects: " + "; ".join(f"{patients[i]} {phase}: {kind}" for i, (phase, kind) in
                                         sorted(defect_of.items())) if defect_of else "", out_dir)
    return MockRelease(out_dir, tuple(patients), truth_file)


def lesion_centre(truth: dict, patient: str, lesion: str, phase: str) -> Optional[np.ndarray]:
    """The true centre (mm) of ``lesion`` of ``patient`` in the physical space of ``phase``'s series."""
    entry = truth["patients"][patient]
    found = next((les for les in entry["lesions"] if les["index"] == lesion), None)
    if found is None:
        return None
    return np.array(found["centre_mm"]) + np.array(entry["shift_mm"][phase])
