"""A synthetic LLD-MMRI 2023 release in the official layout (``nnunet-mvext make-lld-mock``), for tests and the
walkthrough in docs/how_to/lld_mmri.md. It is not a model of liver MRI; it has the properties of the release that
the import must handle. By default (``real_release=True``) it is made **as the real release is**:

- **geometry only in the JSON**: every NIfTI header reads spacing 1 x 1 x 1, origin 0, identity direction; each
  series' true geometry is in ``Annotation.json``: ``pixel_spacing`` ``[sx, sy]``, ``slice_spacing`` (z),
  ``origin`` and a ``slice_thickness`` that is **not** the z spacing (``slice_spacing * U(0.5, 0.9)``);
- eight series per patient (:data:`~nnunet_mvext.lld_mmri.annotation.PHASES`), **each on its own anisotropic grid**:
  in-plane spacing ``U(0.6, 1.6)`` mm (``sx = sy``), slice spacing ``U(2, 8)`` mm, a field of view of ``U(74, 80)``
  x ``U(64, 70)`` mm in-plane (non-square slices, more columns than rows: 47..134 x 40..117 voxels) and
  ``U(70, 80)`` mm along z (9..40 slices; about 93 k voxels per series on average, 1.15 times the legacy mock's
  81 k), the grid's centre ``U(-4, 4)`` mm off the patient's centre per axis; int16 voxels; lesions are spheres of
  radius ``U(5, 9)`` mm;
- **box jitter in millimetres**: each of the six bounds moved by ``rint(U(-j, j) / spacing)`` voxels along its axis
  (``box_jitter_mm``, default 3);
- **quirks of the release** (``quirks``, default on; recorded in ``mock_truth.json`` ``quirks``): the last patient's
  id holds a hyphen (``MR-1xxxxx``); one patient is **flipped** (every series stored with its pixel array reversed
  along z, numpy axis 0, its boxes in that stored index space, its JSON geometry as for an unflipped patient: with
  the fix of :mod:`~nnunet_mvext.lld_mmri.geometry`, slice ``k`` at ``oz + (N - 1 - k) sz``, the lesion's physical
  centre is the truth); one patient's ``In Phase`` series holds a **repeated block** of 3 slices (stored twice, the
  volume 3 slices longer, the slice indices of boxes at or above the block's end shifted by 3). The flipped and the
  repeated patient are the first two patients without a defect, released ones first; the flipped patient's lesions
  are drawn again (from a stream of their own) until the first lies >= 10 mm off the patient's centre along z, so
  that the flip moves it visibly;
- **a test set** (``test_fraction`` of ``num_patients``, rounded, default 0.25): ``lldmmri_test_set/images/...`` and
  ``lldmmri_test_set/labels/Annotation_test.json`` (same format, real categories, one lesion class per patient, no
  defects), patients ``<prefix>3xxxxx`` disjoint from ``Annotation.json``'s;
- **the official crops and folds**: ``classification_dataset/images/<case>/<phase>.nii.gz`` exactly as the
  challenge's ``crop_roi.py`` writes them from the stored series and boxes
  (:mod:`~nnunet_mvext.lld_mmri.official_crops`: every lesion of every readable series whose box lies within the
  slices, categories -1 included); ``classification_dataset/labels/labels.txt`` (``"<case> <class>"`` for every
  labelled crop case, in Annotation.json order), ``labels_val_inaccessible.txt`` (the category -1 cases,
  ``"<case> -1"``) and ``train_fold1..5.txt`` / ``val_fold1..5.txt`` as ``gene_cross_val.py`` writes them
  (:mod:`~nnunet_mvext.lld_mmri.official_folds`).

``real_release=False`` gives the **legacy mock** (the same draws as before this option existed): the geometry in the
headers (in-plane spacing ``U(1.5, 2.0)`` mm, slice spacing ``U(2.0, 3.5)`` mm, field of view ``U(80, 92)`` mm
in-plane and ``U(80, 96)`` mm along z, the grid's centre ``U(-8, 8)`` mm off), the JSON without ``slice_spacing`` and
``origin``, box jitter ``box_jitter`` in voxels, no quirks, no test set, no crops.

Common to both:

- **misregistration**: the anatomy of each phase is shifted by ``U(-m, m)`` mm per axis (``misregistration_mm``,
  default 6), independently per phase (patients breathe and move between phases);
- **boxes per series** in the challenge's convention (x, y max exclusive, z max inclusive; see
  :mod:`~nnunet_mvext.lld_mmri.annotation`), the lesion's true extent in that series plus the annotators' jitter,
  drawn from a random stream of its own (one seed gives the same images for every jitter);
- several lesions (2 or 3, same category) for a fraction of the patients (``multi_lesion_fraction``, default 0.3);
- unreleased patients: category -1 for a fraction of them (``unreleased_fraction``, default 0.2);
- with ``defects`` (default), entries like those the challenge's own crop code skips: in patient 1 the T2WI box of
  lesion 0 lies beyond the slice count, in patient 2 the DWI series file is unreadable, and patient 3 has no
  ``Out Phase`` series at all (a missing phase).

**Intensities** follow the multi-class synthetic data of :mod:`nnunet_mvext.synthetic.multiphase` (its enhancement
patterns, offsets, amplitudes and rim shell, over the eight phases in the order above): class ``k`` of the release is
that module's pattern ``k`` (persistent, washout, fill_in, rim, early_peak, plateau, late_peak), i.e. the class is
decided by comparing phases, as there. A patient's lesions share its class, offset and amplitude; each draws its own
``N(0, 0.05)`` contrast noise. The liver is an ellipsoid at ``1 + 0.3 sin(pi t_p)``; blur ``sigma = 0.7`` voxels,
noise ``N(0, 0.15)``, stored as ``round(100 * value)``.

``mock_truth.json`` (next to ``images/`` and ``labels/``, not part of a release) holds what the mock knows: per patient
the class, whether it was released, every lesion's centre and radius (mm, the patient frame), every phase's shift
(mm), its true grid (``series``: uid, stored size, spacing, origin, flipped, repeated block), the liver's radii
and the intensity levels (so that a series can be drawn again without noise) and the defects placed;
``quirks`` names the flipped, repeated-block and hyphenated patients; ``test_patients`` holds the test set's patients
in the same form. A lesion's centre in the physical space of phase ``p`` is ``centre + shift[p]``
(:func:`lesion_centre`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter

from nnunet_mvext.errors import MVExtError
from nnunet_mvext.lld_mmri.annotation import CLASS_NAMES, PHASES, UNRELEASED
from nnunet_mvext.lld_mmri.official_crops import crop_folder, official_crop
from nnunet_mvext.lld_mmri.official_folds import INACCESSIBLE_TXT, LABELS_DIR, LABELS_TXT, write_fold_files
from nnunet_mvext.synthetic.multiphase import (
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
TEST_SET = "lldmmri_test_set"
TEST_ANNOTATION = os.path.join(TEST_SET, "labels", "Annotation_test.json")
CROPS_DIR = os.path.join("classification_dataset", "images")
# legacy mock (real_release=False)
INPLANE_SPACING = (1.5, 2.0)
SLICE_SPACING = (2.0, 3.5)
INPLANE_FOV = (80.0, 92.0)
SLICE_FOV = (80.0, 96.0)
GRID_OFFSET_MM = 8.0
# the mock as the real release is
REAL_INPLANE_SPACING = (0.6, 1.6)
REAL_SLICE_SPACING = (2.0, 8.0)
REAL_FOV_X = (74.0, 80.0)
REAL_FOV_Y = (64.0, 70.0)
REAL_FOV_Z = (70.0, 80.0)
REAL_GRID_OFFSET_MM = 4.0
THICKNESS_FRACTION = (0.5, 0.9)
REPEATED_SLICES = 3
FLIPPED_LESION_Z_MM = 10.0
REPEATED_PHASE = "In Phase"
LIVER_RADII = ((26.0, 34.0), (26.0, 34.0), (24.0, 30.0))
LESION_RADIUS = (5.0, 9.0)
DEFECTS = ((1, "T2WI", "box beyond the slice count"), (2, "DWI", "unreadable series file"),
           (3, "Out Phase", "missing phase"))


@dataclass(frozen=True)
class MockRelease:
    """Where a generated release lies, its patients (Annotation.json's), the ground truth file and the test set's
    patients (Annotation_test.json's; empty for the legacy mock)."""

    folder: str
    patients: tuple
    truth_file: str
    test_patients: tuple = field(default=())

    def truth(self) -> dict:
        with open(self.truth_file) as f:
            return json.load(f)


def _grid(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Legacy: ``(size, spacing, origin)`` of one series (ITK order x, y, z), the grid centred near the patient's
    centre."""
    inplane = rng.uniform(*INPLANE_SPACING)
    spacing = np.array([inplane, inplane, rng.uniform(*SLICE_SPACING)])
    fov = np.array([rng.uniform(*INPLANE_FOV)] * 2 + [rng.uniform(*SLICE_FOV)])
    size = np.ceil(fov / spacing).astype(int)
    centre = rng.uniform(-GRID_OFFSET_MM, GRID_OFFSET_MM, 3)
    origin = centre - spacing * (size - 1) / 2
    return size, spacing, origin


def _real_grid(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """As the real release: anisotropic spacing, non-square slices (module docstring)."""
    inplane = rng.uniform(*REAL_INPLANE_SPACING)
    spacing = np.array([inplane, inplane, rng.uniform(*REAL_SLICE_SPACING)])
    fov = np.array([rng.uniform(*REAL_FOV_X), rng.uniform(*REAL_FOV_Y), rng.uniform(*REAL_FOV_Z)])
    size = np.ceil(fov / spacing).astype(int)
    centre = rng.uniform(-REAL_GRID_OFFSET_MM, REAL_GRID_OFFSET_MM, 3)
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
         jitter: int, rng: np.random.Generator, jitter_mm: Optional[float] = None) -> dict:
    """The lesion's voxel extent in one series (challenge convention) with each bound jittered (``jitter`` voxels,
    or ``rint(U(-jitter_mm, jitter_mm) / spacing)`` voxels when ``jitter_mm`` is given), clipped to the image and at
    least one voxel wide."""
    lo = np.rint((centre - radius - origin) / spacing).astype(int)
    hi = np.rint((centre + radius - origin) / spacing).astype(int)
    if jitter_mm is None:
        lo = lo + rng.integers(-jitter, jitter + 1, 3)
        hi = hi + rng.integers(-jitter, jitter + 1, 3)
    else:
        lo = lo + np.rint(rng.uniform(-jitter_mm, jitter_mm, 3) / spacing).astype(int)
        hi = hi + np.rint(rng.uniform(-jitter_mm, jitter_mm, 3) / spacing).astype(int)
    lo = np.clip(lo, 0, size - 1)
    hi = np.clip(np.maximum(hi, lo), 0, size - 1)
    return {"x_min": int(lo[0]), "y_min": int(lo[1]), "z_min": int(lo[2]),
            "x_max": int(hi[0]) + 1, "y_max": int(hi[1]) + 1, "z_max": int(hi[2])}


def _series_array(size: np.ndarray, spacing: np.ndarray, origin: np.ndarray, shift: np.ndarray,
                  liver_radii: np.ndarray, lesions: list, p: int, levels: dict,
                  rng: np.random.Generator) -> np.ndarray:
    """One phase's int16 array (numpy order z, y, x): liver, lesion cores and shells at the phase's levels, shifted by
    ``shift`` mm, on the grid ``size, spacing, origin``."""
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
    return np.rint(100 * img).astype(np.int16)


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


def _flip_box(box: dict, slices: int) -> dict:
    """The box of an array reversed along z (numpy axis 0) of ``slices`` slices."""
    return {**box, "z_min": slices - 1 - box["z_max"], "z_max": slices - 1 - box["z_min"]}


def _repeat_block(array: np.ndarray, start: int) -> np.ndarray:
    """Slices ``start .. start + REPEATED_SLICES - 1`` stored twice: true slice ``k`` is stored at ``k`` below the
    block's end and at ``k + REPEATED_SLICES`` from it on."""
    end = start + REPEATED_SLICES
    return np.concatenate([array[:end], array[start:end], array[end:]], axis=0)


def _repeated_index(k: int, start: int) -> int:
    return k if k < start + REPEATED_SLICES else k + REPEATED_SLICES


def _block_start(lesion_slices: list[tuple[int, int]], slices: int, rng: np.random.Generator) -> int:
    """Where the repeated block starts: below every lesion when there is room (so that their boxes shift), else
    anywhere it does not cut a lesion, else at slice 0."""
    free = [b for b in range(0, slices - REPEATED_SLICES + 1)
            if all(b + REPEATED_SLICES <= lo or b > hi for lo, hi in lesion_slices)]
    below = [b for b in free if all(b + REPEATED_SLICES <= lo for lo, _ in lesion_slices)]
    pool = below or free or [0]
    return int(pool[int(rng.integers(len(pool)))])


@dataclass
class _Patient:
    """What one generated patient needs from the caller and gives back."""

    name: str
    index: int
    label: int
    category: int
    defect: Optional[tuple] = None
    flipped: bool = False
    repeated: bool = False
    entries: list = field(default_factory=list)
    truth: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)  # series uid -> stored array (real mode, readable series)


def _make_patient(pt: _Patient, images_dir: str, seed: int, rng: np.random.Generator,
                  jitter_rng: np.random.Generator, quirk_rng: np.random.Generator, real: bool, multi: bool,
                  misregistration_mm: float, box_jitter: int, box_jitter_mm: float, uid_tag: str) -> None:
    """Draw and write one patient's series; fills ``pt.entries`` (Annotation.json entries, shuffled) and
    ``pt.truth``."""
    liver_radii = np.array([rng.uniform(*r) for r in LIVER_RADII])
    lesions = _lesions(rng, liver_radii, int(rng.integers(2, 4)) if multi else 1)
    if real and pt.flipped:  # the flip is visible only away from the grid's centre: redraw until 10 mm off in z
        for _ in range(200):
            if abs(lesions[0][0][2]) >= FLIPPED_LESION_Z_MM:
                break
            lesions = _lesions(quirk_rng, liver_radii, len(lesions))
    levels = _levels(pt.label, len(lesions), rng)
    study = f"1.2.826.0.1.{uid_tag}{seed}.{pt.index}"
    entries, shifts, series_truth = [], {}, {}
    for p, phase in enumerate(PHASES):
        shift = rng.uniform(-misregistration_mm, misregistration_mm, 3)
        size, spacing, origin = _real_grid(rng) if real else _grid(rng)
        shifts[phase] = shift.tolist()
        if pt.defect == (phase, "missing phase"):
            continue
        series = f"1.2.826.0.2.{uid_tag}{seed}.{pt.index}.{p}.{int(rng.integers(1e6))}"
        folder = os.path.join(images_dir, pt.name, study)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, series + ".nii.gz")
        array = _series_array(size, spacing, origin, shift, liver_radii, lesions, p, levels, rng)
        boxes = [_box(c + shift, r, size, spacing, origin, box_jitter, jitter_rng, box_jitter_mm if real else None)
                 for c, r in lesions]
        record = {"series": series, "size": [int(v) for v in size], "spacing": spacing.tolist(),
                  "origin": origin.tolist(), "flipped": False, "repeated_block": None}
        if real and pt.repeated and phase == REPEATED_PHASE:
            start = _block_start([(b["z_min"], b["z_max"]) for b in boxes], int(size[2]), quirk_rng)
            array = _repeat_block(array, start)
            boxes = [{**b, "z_min": _repeated_index(b["z_min"], start), "z_max": _repeated_index(b["z_max"], start)}
                     for b in boxes]
            record["repeated_block"] = {"start": start, "length": REPEATED_SLICES}
            record["size"] = [int(size[0]), int(size[1]), int(array.shape[0])]
        if real and pt.flipped:
            array = array[::-1].copy()
            boxes = [_flip_box(b, array.shape[0]) for b in boxes]
            record["flipped"] = True
        if pt.defect == (phase, "unreadable series file"):
            with open(path, "wb") as f:
                f.write(b"not a NIfTI file: a truncated download\n")
        else:
            image = sitk.GetImageFromArray(array)  # real: spacing 1, origin 0, identity, as the release's headers
            if not real:
                image.SetSpacing(tuple(float(v) for v in spacing))
                image.SetOrigin(tuple(float(v) for v in origin))
            sitk.WriteImage(image, path, useCompression=True)
            if real:
                pt.arrays[series] = array
        lesion_json = {}
        for k, box in enumerate(boxes):
            if k == 0 and pt.defect == (phase, "box beyond the slice count"):
                box["z_min"], box["z_max"] = int(array.shape[0]) + 2, int(array.shape[0]) + 5
            lesion_json[str(k)] = {"category": pt.category, "bbox": {"3D_box": box}}
        entry = {"studyUID": study, "seriesUID": series, "phase": phase,
                 "pixel_spacing": [float(spacing[0]), float(spacing[1])]}
        if real:
            entry["slice_thickness"] = float(spacing[2] * quirk_rng.uniform(*THICKNESS_FRACTION))
            entry["slice_spacing"] = float(spacing[2])
            entry["origin"] = [float(v) for v in origin]
            entry["annotation"] = {"num_targets": len(boxes), "lesion": lesion_json}
            record["slice_thickness"] = entry["slice_thickness"]
        else:
            entry["slice_thickness"] = float(spacing[2])
            entry["annotation"] = {"lesion": lesion_json}
        entries.append(entry)
        series_truth[phase] = record
    order = rng.permutation(len(entries))
    pt.entries = [entries[j] for j in order]
    pt.truth = {"class": pt.label, "class_name": CLASS_NAMES[pt.label], "released": pt.category != UNRELEASED,
                "lesions": [{"index": str(k), "centre_mm": c.tolist(), "radius_mm": float(r)}
                            for k, (c, r) in enumerate(lesions)],
                "shift_mm": shifts,
                "defects": [{"phase": pt.defect[0], "kind": pt.defect[1]}] if pt.defect else [],
                "liver_radii_mm": liver_radii.tolist(),
                "levels": {"organ": levels["organ"].tolist(), "core": [c.tolist() for c in levels["core"]],
                           "shell": [c.tolist() for c in levels["shell"]], "bias_phase": float(levels["bias_phase"])}}
    if real:
        pt.truth["series"] = series_truth
        pt.truth["flipped"] = pt.flipped


def _write_crops(out_dir: str, pt: _Patient, first_seen: dict) -> None:
    """crop_roi.py over the patient's series entries in file order (module docstring); ``first_seen`` collects
    ``{case: category}`` in the order the cases are first written (labels.txt's order)."""
    for entry in pt.entries:
        array = pt.arrays.get(entry["seriesUID"])
        if array is None:
            continue  # crop_roi.py cannot read the series (unreadable file) and goes on
        for idx, lesion in entry["annotation"]["lesion"].items():
            roi = official_crop(array, lesion["bbox"]["3D_box"])
            if roi is None:
                continue  # beyond the slice count: crop_roi.py skips it
            case = crop_folder(pt.name, idx)
            folder = os.path.join(out_dir, CROPS_DIR, case)
            os.makedirs(folder, exist_ok=True)
            sitk.WriteImage(sitk.GetImageFromArray(roi), os.path.join(folder, f"{entry['phase']}.nii.gz"))
            first_seen.setdefault(case, lesion["category"])
    pt.arrays.clear()


def _write_rows(path: str, rows) -> None:
    with open(path, "w") as f:
        f.writelines(f"{case} {cls}\n" for case, cls in rows)


def generate_mock_release(out_dir: str, num_patients: int = 12, seed: int = 0, *, unreleased_fraction: float = 0.2,
                          multi_lesion_fraction: float = 0.3, misregistration_mm: float = 6.0, box_jitter: int = 2,
                          defects: bool = True, patient_prefix: str = "MR", real_release: bool = True,
                          box_jitter_mm: float = 3.0, quirks: bool = True,
                          test_fraction: float = 0.25) -> MockRelease:
    """Write a mock release into ``out_dir`` (module docstring; ``real_release=False``: the legacy mock, where
    ``box_jitter`` (voxels) applies and ``box_jitter_mm``, ``quirks`` and ``test_fraction`` do not); refuses an
    existing non-empty folder. Classes are balanced over the patients (each of the 7 once before any twice), the
    unreleased ones are a random subset."""
    if num_patients < 1:
        raise MVExtError(f"--patients must be >= 1, got {num_patients}.")
    if defects and num_patients < 4:
        raise MVExtError(f"the defects go to patients 1, 2 and 3: give --patients >= 4 or --no-defects "
                         f"(got {num_patients}).")
    for name, value in (("unreleased_fraction", unreleased_fraction), ("multi_lesion_fraction",
                                                                       multi_lesion_fraction),
                        ("test_fraction", test_fraction)):
        if not 0 <= value <= 1:
            raise MVExtError(f"{name} must be in [0, 1], got {value}.")
    if misregistration_mm < 0 or box_jitter < 0 or box_jitter_mm < 0:
        raise MVExtError(f"misregistration_mm ({misregistration_mm}), box_jitter ({box_jitter}) and box_jitter_mm "
                         f"({box_jitter_mm}) must be >= 0.")
    defect_of = {i: (phase, kind) for i, phase, kind in DEFECTS} if defects else {}
    quirky = real_release and quirks
    if quirky and num_patients - len(defect_of) < 2:
        raise MVExtError(f"the flipped and the repeated-slices patient need 2 patients without a defect: give "
                         f"--patients >= {len(defect_of) + 2}, --no-defects or --no-quirks (got {num_patients}).")
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise MVExtError(f"{out_dir} exists and is not an empty folder; refusing to write a mock release into it.")

    rng = np.random.default_rng(seed)
    jitter_rng = np.random.default_rng([seed, 1])  # apart, so that the images do not depend on the box jitter
    quirk_rng = np.random.default_rng([seed, 2])  # thicknesses and the repeated block (real mode only)
    labels = assign_classes(num_patients, np.full(len(CLASS_NAMES), 1.0 / len(CLASS_NAMES)), rng)
    unreleased = set(rng.choice(num_patients, int(round(unreleased_fraction * num_patients)), replace=False).tolist())
    multi = set(rng.choice(num_patients, int(round(multi_lesion_fraction * num_patients)), replace=False).tolist())
    flipped = repeated = hyphen = None
    if quirky:
        plain = sorted((i for i in range(num_patients) if i not in defect_of), key=lambda i: (i in unreleased, i))
        flipped, repeated, hyphen = plain[0], plain[1], num_patients - 1

    patients, crop_cases = [], {}
    for i in range(num_patients):
        name = f"{patient_prefix}-{100000 + 37 * i}" if i == hyphen else f"{patient_prefix}{100000 + 37 * i}"
        pt = _Patient(name, i, int(labels[i]), UNRELEASED if i in unreleased else int(labels[i]), defect_of.get(i),
                      i == flipped, i == repeated)
        _make_patient(pt, os.path.join(out_dir, "images"), seed, rng, jitter_rng, quirk_rng, real_release,
                      i in multi, misregistration_mm, box_jitter, box_jitter_mm, "")
        if real_release:
            _write_crops(out_dir, pt, crop_cases)
        patients.append(pt)
    os.makedirs(os.path.join(out_dir, "labels"), exist_ok=True)
    with open(os.path.join(out_dir, "labels", "Annotation.json"), "w") as f:
        json.dump({"Annotation_info": {pt.name: pt.entries for pt in patients}}, f, indent=1)
    truth = {"seed": seed, "misregistration_mm": misregistration_mm, "real_release": real_release,
             "patients": {pt.name: pt.truth for pt in patients}}
    if real_release:
        truth["box_jitter_mm"] = box_jitter_mm
    else:
        truth["box_jitter"] = box_jitter

    test_names: list[str] = []
    if real_release:
        num_test = int(round(test_fraction * num_patients))
        test_labels = assign_classes(num_test, np.full(len(CLASS_NAMES), 1.0 / len(CLASS_NAMES)), rng) \
            if num_test else []
        test = []
        for j in range(num_test):
            pt = _Patient(f"{patient_prefix}{300000 + 37 * j}", j, int(test_labels[j]), int(test_labels[j]))
            _make_patient(pt, os.path.join(out_dir, TEST_SET, "images"), seed, rng, jitter_rng, quirk_rng, True,
                          False, misregistration_mm, 0, box_jitter_mm, "9")
            pt.arrays.clear()
            test.append(pt)
        test_names = [pt.name for pt in test]
        os.makedirs(os.path.dirname(os.path.join(out_dir, TEST_ANNOTATION)), exist_ok=True)
        with open(os.path.join(out_dir, TEST_ANNOTATION), "w") as f:
            json.dump({"Annotation_info": {pt.name: pt.entries for pt in test}}, f, indent=1)
        truth["test_patients"] = {pt.name: pt.truth for pt in test}
        labelled = [(c, k) for c, k in crop_cases.items() if k != UNRELEASED]
        inaccessible = [(c, k) for c, k in crop_cases.items() if k == UNRELEASED]
        labels_dir = os.path.join(out_dir, LABELS_DIR)
        os.makedirs(labels_dir, exist_ok=True)
        _write_rows(os.path.join(labels_dir, LABELS_TXT), labelled)
        _write_rows(os.path.join(labels_dir, INACCESSIBLE_TXT), inaccessible)
        write_fold_files(labelled, labels_dir)
        truth["crop_cases"] = {"labelled": [c for c, _ in labelled], "inaccessible": [c for c, _ in inaccessible]}
    truth["quirks"] = {
        "flipped_patients": [patients[flipped].name] if flipped is not None else [],
        "repeated_slices": [{"patient": patients[repeated].name, "phase": REPEATED_PHASE,
                             "series": patients[repeated].truth["series"][REPEATED_PHASE]["series"],
                             **patients[repeated].truth["series"][REPEATED_PHASE]["repeated_block"]}]
        if repeated is not None and REPEATED_PHASE in patients[repeated].truth["series"] else [],
        "hyphenated_patients": [patients[hyphen].name] if hyphen is not None else [],
    }
    truth_file = os.path.join(out_dir, TRUTH_FILE)
    with open(truth_file, "w") as f:
        json.dump(truth, f, indent=1)
    logger.info("Wrote a %s mock release of %d patients (%d unreleased, %d with several lesions%s%s) to %s%s",
                "real-release" if real_release else "legacy", num_patients, len(unreleased), len(multi),
                ", defects: " + "; ".join(f"{patients[i].name} {phase}: {kind}" for i, (phase, kind) in
                                         sorted(defect_of.items())) if defect_of else "",
                f", flipped {patients[flipped].name}, repeated slices {patients[repeated].name}"
                if quirky else "", out_dir, f" and {len(test_names)} test patient(s)" if real_release else "")
    return MockRelease(out_dir, tuple(pt.name for pt in patients), truth_file, tuple(test_names))


def lesion_centre(truth: dict, patient: str, lesion: str, phase: str) -> Optional[np.ndarray]:
    """The true centre (mm) of ``lesion`` of ``patient`` (of Annotation.json or of the test set) in the physical
    space of ``phase``'s series (its true geometry: for a flipped patient, with the flip fixed)."""
    entry = truth["patients"].get(patient) or truth.get("test_patients", {}).get(patient)
    if entry is None:
        return None
    found = next((les for les in entry["lesions"] if les["index"] == lesion), None)
    if found is None:
        return None
    return np.array(found["centre_mm"]) + np.array(entry["shift_mm"][phase])
