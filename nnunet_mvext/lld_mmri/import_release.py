"""``nnunet-mvext import-lld RELEASE -d ID``: the LLD-MMRI 2023 release as an nnU-Net raw dataset.

Writes ``nnUNet_raw/Dataset<ID>_<name>/`` (default name ``LLDMMRI2023``):

- ``imagesTr/<case>_000C.nii.gz``, ``labelsTr/<case>.nii.gz``: the labelled cases; channels in the order of
  :data:`~nnunet_mvext.lld_mmri.annotation.PHASES` (``0000`` T2WI .. ``0007`` C+Delay), on one grid per case
  (:mod:`~nnunet_mvext.lld_mmri.alignment`); labels 0 background, 1 lesion (the box, filled; a lesion mask instead
  where the release has one, see below).
- ``imagesTs/``, ``labelsTs/<case>.nii.gz``: the unreleased patients (category -1) and the patients named by
  ``test_patients`` (a held-out labelled split), with their box labels, which ``predict-cls --roi labelsTs`` uses to
  localise the lesion; the classes of the labelled ones in ``labelsTs/classification.csv`` (``case_id,class``).
- ``dataset.json`` (nnU-Net's own writer, ``generate_dataset_json``): channel names = the phase names exactly,
  labels, and the ``classification`` block with the challenge's class names in the challenge's order and the
  training cases' classes.
- ``groups.csv`` (``case_id,group``: the patient of every training case) for ``make-splits --groups``.
- ``lesions.csv`` (``case_id,patient,lesions,split,category,reference_phase,box_volume_mm3``, every case) for
  ``export-lld``, which turns case predictions into one per patient.
- ``missing_phases.json`` (:mod:`nnunet_mvext.classification.missing_phases`): the phases each case lacks.
- ``alignment.json``: per case the output grid and, per phase, the series, the grid it was sampled on and what placed
  it (``own box``, ``reference box`` or ``physical``).
- ``import_report.json``: the settings, counts and every skipped or repaired entry.

**Cases.** ``crop`` (default): one case per lesion, ``<patient>_<lesion index>`` for every lesion (``MR1234_0``,
``MR1234_1``). Unlike the official crops (``MR1234`` for lesion 0), no case id equals a patient id, so a lesion case
is never mistaken for a patient's prediction; ``lesions.csv`` maps each to its patient. ``resample``: one case per
patient, ``<patient>``, all its lesions in one label. Patients with several lesions get one prediction per patient
from ``export-lld``: the mean of their lesion cases' probabilities weighted by the reference boxes' volumes (mm^3).

**Lesion index and category across series.** A lesion is the same JSON key in every series of a patient. Its
category is the one most of its series give (ties: the reference phase's); every disagreement between series, and
between the lesions of one patient, is reported. A lesion missing from a series is reported; in crop that phase is
placed around the reference box's centre.

**Reference phase** (default ``C+A``): the grid of a case. When it has no usable box for a lesion (crop) or no
readable series (resample), the next phase in the order reference, then :data:`PHASES` takes its place, reported.

**Skipped and repaired entries** (reported in ``import_report.json`` and on screen, each with patient, series, phase,
lesion, why and what was done):

- a series file that is missing, unreadable, truncated (:func:`truncated`: ITK would read it, zero-filled) or not 3D:
  the phase is missing for the patient: a placeholder
  (zeros on the case's grid) is written and ``missing_phases.json`` names it; a phase without any series in
  ``Annotation.json`` likewise;
- a box beyond its image (the challenge's crop code skips boxes beyond the slice count) or empty: not used; in crop
  the phase is placed around the reference box's centre (by physical coordinates), in resample the label takes the
  lesion's box from the next phase that has a usable one, mapped by physical coordinates;
- a second series of a phase: used only when the first is unreadable (or has no geometry), else ignored;
- a phase placed by physical coordinates whose region lies mostly outside its series: missing, as above;
- a lesion without a usable box in any series, or a patient without a readable series: not imported.

**Masks.** Where a release holds a lesion mask for the reference series at ``labels/<patient>/<studyUID>/
<seriesUID>.nii.gz`` (the image layout under ``labels/``; the 2023 release has none, the layout of a later one is
assumed, not known), its non-zero voxels are the lesion label instead of the boxes (nearest-neighbour onto the case's
grid; in crop everything non-zero inside the crop, including a neighbouring lesion). Counted in the report.

**Refused** before anything is written: no ``Annotation.json``, a malformed one or an unknown phase name
(:mod:`~nnunet_mvext.lld_mmri.annotation`), an unknown reference phase or alignment, a test-patient list naming a
patient the release lacks, and an existing dataset folder: without ``force`` always, with ``force`` unless an
earlier ``import-lld`` wrote it (its marker file ``.nnunet_mvext_import_lld.json`` lists the files it wrote). With
``force`` exactly those files are removed; anything else in the folder stays, and a file of the new import that
would replace a file the earlier import did not write is refused. Another folder with the same dataset id is
refused too (nnU-Net would not know which one ``-d ID`` means).
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import logging
import os
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk

from nnunet_mvext.classification.missing_phases import write_missing_phases
from nnunet_mvext.errors import MVExtError
from nnunet_mvext.json_files import backup_path
from nnunet_mvext.lld_mmri.alignment import (
    OFFICIAL_MARGIN,
    Grid,
    box_centre,
    box_label,
    box_voxels,
    crop_sampling_grids,
    mask_label,
    placeholder,
    resample_sampling_grids,
    sample_channel,
    with_geometry,
)
from nnunet_mvext.lld_mmri.annotation import (
    CLASS_NAMES,
    PHASES,
    UNRELEASED,
    Box,
    SeriesEntry,
    majority,
    majority_category,
    read_annotation,
)
from nnunet_mvext.lld_mmri.geometry import (
    GEOMETRY_SOURCES,
    PUBLISHED_FLIPPED_PATIENTS,
    SeriesGeometry,
    read_flipped_patients,
    series_grid,
)
from nnunet_mvext.lld_mmri.official_folds import SPLITS_FILE, plan_official_splits, write_splits
from nnunet_mvext.lld_mmri.release_checks import (
    MIN_INSIDE_FRACTION,
    describe_repeats,
    inside_fraction,
    orientation_outliers,
    repeated_slices,
)

logger = logging.getLogger(__name__)

ALIGNMENTS = ("crop", "resample")
DEFAULT_NAME = "LLDMMRI2023"
DEFAULT_REFERENCE_PHASE = "C+A"
MARKER = ".nnunet_mvext_import_lld.json"
REPORT = "import_report.json"
GROUPS = "groups.csv"
LESIONS = "lesions.csv"
ALIGNMENT_RECORD = "alignment.json"
CROPS_DIR = "classification_dataset"
FILE_ENDING = ".nii.gz"
LABELS = {"background": 0, "lesion": 1}
LESION_COLUMNS = ("case_id", "patient", "lesions", "split", "category", "reference_phase", "box_volume_mm3")


@dataclass(frozen=True)
class Skipped:
    """One skipped or repaired entry of the release: where (patient, series, phase, lesion), why, what was done."""

    patient: str
    phase: str
    series: str
    lesion: Optional[str]
    reason: str
    action: str

    def message(self) -> str:
        series = f" series {self.series}" if self.series else ""
        lesion = f", lesion {self.lesion}" if self.lesion is not None else ""
        return f"patient {self.patient}, {self.phase}{series}{lesion}: {self.reason} -> {self.action}"


class CaseFiles:
    """Where a case of an import goes: ``imagesTr``/``labelsTr`` for ``split == "train"``, else the ``Ts`` folders
    (needs ``case_id`` and ``split``)."""

    case_id: str
    split: str

    @property
    def images_folder(self) -> str:
        return "imagesTr" if self.split == "train" else "imagesTs"

    @property
    def labels_folder(self) -> str:
        return "labelsTr" if self.split == "train" else "labelsTs"

    def files(self) -> list[str]:
        """The files this case writes, relative to the dataset folder."""
        return [os.path.join(self.images_folder, f"{self.case_id}_{c:04d}{FILE_ENDING}") for c in range(len(PHASES))] \
            + [os.path.join(self.labels_folder, self.case_id + FILE_ENDING)]


@dataclass
class CasePlan(CaseFiles):
    """Everything needed to write one case (geometry from the series headers; pixels are read when writing)."""

    case_id: str
    patient: str
    lesions: tuple
    split: str  # train | test | unlabelled
    category: Optional[int]
    reference_phase: str
    output: Grid
    sampling: dict  # phase -> Grid
    placed_by: dict  # phase -> own box | reference box | physical
    sources: dict  # phase -> (series uid, image path)
    absent: list  # phases without a usable series (placeholders)
    label_boxes: list  # [(Box, Grid of its series)]
    mask: Optional[str]  # path of a released mask of the reference series
    box_volume_mm3: float
    grids: dict = field(default_factory=dict)  # phase -> Grid of its series (set on the pixels before resampling)
    geometry: dict = field(default_factory=dict)  # phase -> where its spacing and origin came from


@dataclass
class ImportPlan:
    cases: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    disagreements: list = field(default_factory=list)
    patients_without_case: list = field(default_factory=list)
    geometry_warnings: list = field(default_factory=list)  # {patient, phase, series, warning}
    geometry_disagreements: dict = field(default_factory=dict)  # field -> number of series
    geometry_fields: dict = field(default_factory=dict)  # field -> {source: number of series}
    orientation: list = field(default_factory=list)  # {patient, lesion, phase, series, distance_mm, threshold_mm}


@dataclass(frozen=True)
class ImportResult:
    """Where the dataset lies and what it holds."""

    dataset_name: str
    folder: str
    train_cases: tuple
    test_cases: tuple
    skipped: tuple
    missing_phases: dict


def _preference(reference_phase: str) -> list[str]:
    return [reference_phase] + [p for p in PHASES if p != reference_phase]


def _lesion_order(indices) -> list[str]:
    return sorted(indices, key=lambda i: (0, int(i), "") if i.isdigit() else (1, 0, i))


def truncated(path: str) -> Optional[str]:
    """Why the NIfTI file ``path`` holds fewer voxel bytes than its header declares, or None.

    ITK reads such a file (a broken download) without an error and fills the missing voxels with zeros. The check
    compares the header's data offset + ``prod(shape) * itemsize`` (nibabel's array proxy; nnU-Net depends on it) with
    the file's size (``.nii``) or with the uncompressed size that gzip records in its last 4 bytes (``.nii.gz``, modulo
    2^32); on a mismatch the file is decompressed to confirm (a gzip of several members records only the last).
    A file nibabel cannot read is left to ITK.
    """
    import gzip
    import zlib

    import nibabel

    try:
        proxy = nibabel.load(path).dataobj
        expected = int(proxy.offset) + int(np.prod(proxy.shape)) * np.dtype(proxy.dtype).itemsize
    except Exception:  # not a NIfTI file nibabel reads: ITK decides
        return None
    if not path.endswith(".gz"):
        size = os.path.getsize(path)
        return None if size >= expected else f"truncated: {size} bytes, its header declares {expected}"
    with open(path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        if int.from_bytes(f.read(4), "little") == expected % 2 ** 32:
            return None
    total = 0
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(1 << 24):
                total += len(chunk)
    except (EOFError, OSError, zlib.error) as e:
        return f"truncated or corrupt gzip ({e})"
    return None if total >= expected else f"truncated: {total} bytes uncompressed, its header declares {expected}"


MISSING_ACTION = "phase missing: placeholder (zeros) + missing_phases.json"


def _header_problem(path: str) -> tuple[Optional[Grid], Optional[str]]:
    """``(header grid, None)`` of a readable 3D series file, or ``(None, why not)``."""
    if not os.path.isfile(path):
        return None, f"series file {path} does not exist"
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        return None, f"unreadable series file {path}: {str(e).strip().splitlines()[-1]}"
    if reader.GetDimension() != 3:
        return None, f"series file {path} is {reader.GetDimension()}D, not 3D"
    if problem := truncated(path):
        return None, f"unreadable series file {path}: {problem}"
    return Grid.of(reader), None


def _read_headers(patient: str, entries: list[SeriesEntry], images: str, plan: ImportPlan, geometry: str,
                  flipped: bool) -> dict[str, tuple[SeriesEntry, SeriesGeometry]]:
    """``{phase: (entry, geometry)}`` of the patient's readable 3D series with a usable geometry
    (:func:`~nnunet_mvext.lld_mmri.geometry.series_grid` from ``geometry``, z reversed for a ``flipped`` patient);
    of several series of one phase the first readable one is used. Reports the others, missing and unreadable
    series, and every geometry field that fell back to the header."""
    by_phase: dict[str, list[SeriesEntry]] = {}
    for entry in entries:
        by_phase.setdefault(entry.phase, []).append(entry)
    series = {}
    for phase in PHASES:
        if phase not in by_phase:
            plan.skipped.append(Skipped(patient, phase, "", None, "no series of this phase in Annotation.json",
                                        MISSING_ACTION))
            continue
        chosen = None
        for entry in by_phase[phase]:
            if chosen is not None:
                plan.skipped.append(Skipped(patient, phase, entry.series_uid, None,
                                            f"a second series of {phase} (series {chosen[0].series_uid} is used)",
                                            "ignored"))
                continue
            header, why = _header_problem(entry.image_in(images))
            if header is not None:
                found = series_grid(entry, header, geometry, flipped)
                if not found.usable:
                    why = ("no geometry: Annotation.json has no pixel_spacing, slice_spacing, slice_thickness or "
                           "origin for this series and its header holds the release's placeholder (spacing 1, "
                           "origin 0)")
                else:
                    chosen = (entry, found)
                    continue
            later = len(by_phase[phase]) > 1 and entry is not by_phase[phase][-1]
            plan.skipped.append(Skipped(patient, phase, entry.series_uid, None, why,
                                        "the next series of this phase is tried" if later else MISSING_ACTION))
        if chosen is None:
            continue
        series[phase] = chosen
        entry, found = chosen
        for name, source in found.sources.items():
            counts = plan.geometry_fields.setdefault(name, {})
            counts[source] = counts.get(source, 0) + 1
        for name in found.disagreements:
            plan.geometry_disagreements[name] = plan.geometry_disagreements.get(name, 0) + 1
        for warning in found.warnings:
            plan.geometry_warnings.append({"patient": patient, "phase": phase, "series": entry.series_uid,
                                           "warning": warning})
    return series


def _usable_boxes(patient: str, lesion: str, series: dict, plan: ImportPlan, alignment: str) -> dict[str, Box]:
    """``{phase: box}`` of the lesion in the readable series whose box fits the image; reports the others."""
    boxes = {}
    action_missing = ("phase placed around the reference box's centre (physical coordinates)" if alignment == "crop"
                      else "box not used")
    for phase, (entry, geometry) in series.items():
        grid = geometry.grid
        found = entry.lesion(lesion)
        if found is None:
            plan.skipped.append(Skipped(patient, phase, entry.series_uid, lesion,
                                        "the lesion is not annotated in this series", action_missing))
            continue
        problem = found.box.problem(grid.size)
        if problem:
            plan.skipped.append(Skipped(patient, phase, entry.series_uid, lesion, problem, action_missing))
            continue
        boxes[phase] = found.box
    return boxes


def _lesion_category(patient: str, lesion: str, entries: list[SeriesEntry], reference_phase: str,
                     plan: ImportPlan) -> int:
    categories = {}
    for entry in entries:
        found = entry.lesion(lesion)
        if found is not None and entry.phase not in categories:
            categories[entry.phase] = found.category
    category = majority_category(categories, reference_phase)
    if len(set(categories.values())) > 1:
        plan.disagreements.append({"patient": patient, "lesion": lesion, "categories": categories, "used": category,
                                   "why": "the series give this lesion different categories; the majority is used"})
    return category


def _split(category: int, patient: str, test_patients: set) -> str:
    if category == UNRELEASED:
        return "unlabelled"
    return "test" if patient in test_patients else "train"


def _reference_for(patient: str, candidates: dict, reference_phase: str, what: str, plan: ImportPlan,
                   lesion: Optional[str] = None) -> Optional[str]:
    for phase in _preference(reference_phase):
        if phase in candidates:
            if phase != reference_phase:
                plan.skipped.append(Skipped(patient, reference_phase, "", lesion, f"the reference phase has {what}",
                                            f"{phase} is the reference of this case"))
            return phase
    return None


def _boxes_region(output: Grid, boxes: list) -> Grid:
    """The part of ``output`` that the label boxes ``[(box, its series' grid)]`` cover (their bounding box)."""
    corners = [c for c in (box_voxels(b, g, output) for b, g in boxes) if c is not None]
    if not corners:
        return output
    lo, hi = np.min([c[0] for c in corners], axis=0), np.max([c[1] for c in corners], axis=0)
    return Grid(tuple(int(v) for v in hi - lo + 1), output.spacing, tuple(float(v) for v in output.physical_point(lo)),
                output.direction)


def _drop_outside(patient: str, case_id: str, lesion: Optional[str], placed: dict, regions: dict, grids: dict,
                  sources: dict, plan: ImportPlan) -> list[str]:
    """The phases placed by physical coordinates (not around a box of their own, which fits its series) whose
    region ``regions[phase]`` (crop: the whole crop; resample: the lesions' boxes) lies mostly outside their series
    (:func:`inside_fraction` below :data:`MIN_INSIDE_FRACTION`): reported; the caller records them missing instead of
    writing an all-zero channel as present."""
    outside = []
    for phase, grid in regions.items():
        if placed[phase] == "own box":
            continue
        fraction = inside_fraction(grid, grids[phase])
        if fraction < MIN_INSIDE_FRACTION:
            outside.append(phase)
            plan.skipped.append(Skipped(patient, phase, sources[phase][0], lesion,
                                        f"case {case_id}: only {fraction:.0%} of the region sampled for this phase "
                                        f"(the crop, or the lesions' boxes in resample) lies inside its series (field "
                                        f"of view)", MISSING_ACTION))
    return outside


def _check_orientation(patient: str, lesion: str, boxes: dict[str, Box], series: dict, plan: ImportPlan) -> None:
    """Report the series whose box centre of ``lesion`` lies far from the other phases' (:mod:`release_checks`)."""
    centres = {p: box_centre(series[p][1].grid, b) for p, b in boxes.items()}
    spacing = {p: series[p][1].grid.spacing[2] for p in boxes}
    for phase, distance, threshold in orientation_outliers(centres, spacing):
        plan.orientation.append({"patient": patient, "lesion": lesion, "phase": phase,
                                 "series": series[phase][0].series_uid, "distance_mm": round(distance, 1),
                                 "threshold_mm": round(threshold, 1)})


def plan_patient(patient: str, entries: list[SeriesEntry], images: str, alignment: str, reference_phase: str,
                 margin: Sequence[int], test_patients: set, plan: ImportPlan, geometry: str = "json",
                 flipped: bool = False, split: Optional[str] = None) -> None:
    """Add the patient's cases (and what was skipped) to ``plan``, from the series headers and the annotation's
    geometry only. ``images``: the folder of ``<patient>/<studyUID>/<seriesUID>.nii.gz``; ``split``: force the
    split of the labelled cases (``test`` for the test annotation file)."""
    series = _read_headers(patient, entries, images, plan, geometry, flipped)
    if not series:
        plan.patients_without_case.append({"patient": patient, "why": "no readable series"})
        return
    grids = {phase: found.grid for phase, (_, found) in series.items()}
    origins = {phase: dict(found.sources, flipped=found.flipped) for phase, (_, found) in series.items()}
    absent = [p for p in PHASES if p not in series]
    lesion_ids = _lesion_order({les.index for e in entries for les in e.lesions})
    if not lesion_ids:
        plan.patients_without_case.append({"patient": patient, "why": "no lesion annotated"})
        return
    boxes = {les: _usable_boxes(patient, les, series, plan, alignment) for les in lesion_ids}
    for les in lesion_ids:
        _check_orientation(patient, les, boxes[les], series, plan)
    categories = {les: _lesion_category(patient, les, entries, reference_phase, plan) for les in lesion_ids}
    if len(set(categories.values())) > 1:
        plan.disagreements.append({"patient": patient, "lesion": None, "categories": categories,
                                   "used": "each lesion case its own" if alignment == "crop" else
                                   majority([categories[les] for les in lesion_ids]),
                                   "why": "the lesions of this patient have different categories"})
    sources = {phase: (entry.series_uid, entry.image_in(images)) for phase, (entry, _) in series.items()}

    def case_split(category: int) -> str:
        return "unlabelled" if category == UNRELEASED else split or _split(category, patient, test_patients)

    def add_case(case_id: str, lesions: tuple, category: int, ref: str, output: Grid, sampling: dict,
                 placed: dict, label_boxes: list, volume: float) -> None:
        regions = sampling if alignment == "crop" else {p: _boxes_region(output, label_boxes) for p in sampling}
        outside = _drop_outside(patient, case_id, lesions[0] if len(lesions) == 1 else None, placed, regions,
                                grids, sources, plan)
        if len(outside) == len(sampling) or ref in outside:
            plan.skipped.append(Skipped(patient, ref, sources[ref][0], None, f"case {case_id}: the reference "
                                        f"phase's region lies outside its series", "case not imported"))
            return
        mask = series[ref][0].mask_path(os.path.dirname(os.path.normpath(images)))
        plan.cases.append(CasePlan(
            case_id, patient, lesions, case_split(category), category, ref, output,
            {p: g for p, g in sampling.items() if p not in outside}, {p: v for p, v in placed.items()
                                                                       if p not in outside},
            {p: v for p, v in sources.items() if p not in outside}, [p for p in PHASES if p in absent or p in outside],
            label_boxes, mask if os.path.isfile(mask) else None, volume, grids, origins))

    if alignment == "crop":
        for les in lesion_ids:
            ref = _reference_for(patient, boxes[les], reference_phase, "no usable box of this lesion", plan, les)
            if ref is None:
                plan.skipped.append(Skipped(patient, reference_phase, "", les, "no usable box in any series",
                                            "lesion not imported"))
                continue
            ref_box = boxes[les][ref]
            output, sampling = crop_sampling_grids(grids[ref], ref_box, grids, boxes[les], margin)
            placed = {p: "own box" if p in boxes[les] else "reference box" for p in grids}
            add_case(f"{patient}_{les}", (les,), categories[les], ref, output, sampling, placed,
                     [(ref_box, grids[ref])], _volume(ref_box, grids[ref]))
        return

    counts = {p: sum(p in boxes[les] for les in lesion_ids) for p in series}
    best = max(counts.values())
    ref = _reference_for(patient, {p for p, n in counts.items() if n == best}, reference_phase,
                         "no readable series or fewer usable boxes than another phase", plan)
    label_boxes, volume = [], 0.0
    for les in lesion_ids:
        source = next((p for p in _preference(ref) if p in boxes[les]), None)
        if source is None:
            plan.skipped.append(Skipped(patient, ref, series[ref][0].series_uid, les, "no usable box in any series",
                                        "lesion not in the label"))
            continue
        if source != ref:
            plan.skipped.append(Skipped(patient, ref, series[ref][0].series_uid, les,
                                        "no usable box on the reference series",
                                        f"the label takes the box of {source}, mapped by physical coordinates"))
        label_boxes.append((boxes[les][source], grids[source]))
        volume += _volume(boxes[les][source], grids[source])
    if not label_boxes:
        plan.patients_without_case.append({"patient": patient, "why": "no usable box in any series"})
        return
    category = majority([categories[les] for les in lesion_ids])
    output, sampling = resample_sampling_grids(grids[ref], list(series))
    add_case(patient, tuple(lesion_ids), category, ref, output, sampling, {p: "physical" for p in series},
             label_boxes, volume)


def _volume(box: Box, grid: Grid) -> float:
    return float(np.prod(box.size()) * np.prod(grid.spacing))


def _read_series(path: str, grid: Grid, cache: dict) -> tuple[Optional[sitk.Image], Optional[str], list]:
    """``(image as float32 on ``grid``, None, repeated slice blocks)`` or ``(None, why it could not be read, [])``;
    each file read once per ``cache``. The geometry of ``grid`` (from the annotation) replaces the header's before
    any resampling; the repeated-slice check runs on the pixels as read."""
    if path not in cache:
        try:
            image = sitk.ReadImage(path, sitk.sitkFloat32)
        except RuntimeError as e:
            cache[path] = (None, str(e).strip().splitlines()[-1], [])
        else:
            if tuple(image.GetSize()) != tuple(grid.size):
                cache[path] = (None, f"its size {image.GetSize()} differs from the header's {grid.size}", [])
            else:
                cache[path] = (with_geometry(image, grid), None, repeated_slices(sitk.GetArrayViewFromImage(image)))
    return cache[path]


def write_case(case: CasePlan, folder: str, cache: Optional[dict] = None
               ) -> tuple[list[str], list[Skipped], list[dict]]:
    """Read the case's series, write its channels and label; returns the phases written as placeholders, the
    series that failed to read now (their phase becomes a placeholder; an unreadable mask falls back to the boxes)
    and the series with repeated slices (reported once per series and ``cache``). ``cache`` keeps the series read
    for the other lesion cases of the patient."""
    cache = {} if cache is None else cache
    missing, failed, repeats = list(case.absent), [], []
    images_folder = os.path.join(folder, case.images_folder)
    for c, phase in enumerate(PHASES):
        image = None
        if phase in case.sources:
            series_uid, path = case.sources[phase]
            first_read = path not in cache
            image, why, blocks = _read_series(path, case.grids[phase], cache)
            if image is None:
                failed.append(Skipped(case.patient, phase, series_uid, None, f"unreadable series file {path}: {why}",
                                      MISSING_ACTION))
                missing.append(phase)
            elif blocks and first_read:
                repeats.append({"patient": case.patient, "phase": phase, "series": series_uid,
                                "repeated": describe_repeats(blocks)})
        channel = placeholder(case.output) if image is None else sample_channel(image, case.sampling[phase],
                                                                                case.output)
        sitk.WriteImage(channel, os.path.join(images_folder, f"{case.case_id}_{c:04d}{FILE_ENDING}"),
                        useCompression=True)
    label = None
    if case.mask is not None:
        try:
            mask = with_geometry(sitk.ReadImage(case.mask), case.grids[case.reference_phase])
            label = mask_label(mask, case.sampling[case.reference_phase], case.output, LABELS["lesion"])
        except RuntimeError as e:
            failed.append(Skipped(case.patient, case.reference_phase, case.sources[case.reference_phase][0], None,
                                  f"unreadable lesion mask {case.mask}: {str(e).strip().splitlines()[-1]}",
                                  "the label is the box"))
    if label is None:
        label = box_label(case.output, case.label_boxes, LABELS["lesion"])
    sitk.WriteImage(label, os.path.join(folder, case.labels_folder, case.case_id + FILE_ENDING), useCompression=True)
    return [p for p in PHASES if p in missing], failed, repeats


def _die_with_parent() -> None:
    """Worker initializer: on Linux the worker gets SIGTERM when the import process dies (``kill -9`` included), so
    no worker goes on writing files alone."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def _write_patient(cases: list[CasePlan], folder: str, single_thread: bool
                   ) -> list[tuple[list[str], list[Skipped], list[dict]]]:
    if single_thread:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    cache: dict = {}
    return [write_case(case, folder, cache) for case in cases]


def _read_test_patients(path: Optional[str], patients: Sequence[str]) -> set:
    from nnunet_mvext.csv_files import read_text_lines

    if path is None:
        return set()
    names = [line.strip() for line in read_text_lines(path, "--test-patients file")
             if line.strip() and not line.lstrip().startswith("#")]
    unknown = [n for n in names if n not in set(patients)]
    if unknown:
        raise MVExtError(f"{path} names {len(unknown)} patient(s) the release does not hold: {', '.join(unknown[:10])}"
                         f"{' ...' if len(unknown) > 10 else ''}. One patient id per line, as in Annotation.json.")
    return set(names)


def _dataset_ids_in_use(raw: str, dataset_id: int, full_name: str) -> list[str]:
    """Folders of another dataset with the same id in ``raw`` and nnU-Net's preprocessed and results folders."""
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_results

    roots = [raw] + [str(v) for v in (nnUNet_preprocessed, nnUNet_results) if v.is_set()]
    return sorted(p for root in roots for p in glob.glob(os.path.join(root, f"Dataset{dataset_id:03d}_*"))
                  if os.path.basename(p) != full_name)


def _read_marker(folder: str) -> Optional[dict]:
    """The earlier import's marker: ``{"written": [files], "sha256": {file: hash}}`` (markers written before hashes
    were recorded have none); None when the folder has no marker."""
    path = os.path.join(folder, MARKER)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            content = json.load(f)
        written = [str(f) for f in content["written"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise MVExtError(f"{path} is not a readable import-lld marker ({type(e).__name__}: {e}); it lists the files "
                         f"an earlier import wrote. Restore it or choose another dataset id or --name.") from None
    return {"written": written, "sha256": dict(content.get("sha256") or {}), "complete": content.get("complete")}


def _marker_files(folder: str) -> Optional[list[str]]:
    marker = _read_marker(folder)
    return None if marker is None else marker["written"]


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _write_marker(folder: str, release: str, files: Sequence[str], hashes: Optional[dict] = None,
                  complete: bool = False) -> None:
    """Write the marker atomically (a temporary file renamed over it): a kill leaves the old or the new marker."""
    path = os.path.join(folder, MARKER)
    with open(path + ".tmp", "w") as f:
        json.dump({"written_by": "nnunet-mvext import-lld", "release": os.path.abspath(release),
                   "complete": complete, "written": sorted(set(files) | {MARKER}), "sha256": hashes or {}}, f,
                  indent=1)
    os.replace(path + ".tmp", path)


def _check_target(folder: str, force: bool) -> Optional[dict]:
    """The earlier import's marker (its files are removed with ``force``); refuses what may not be touched."""
    if not os.path.exists(folder):
        return None
    if not os.path.isdir(folder):
        raise MVExtError(f"{folder} is a file; refusing to replace it. Choose another dataset id or --name.")
    earlier = _read_marker(folder)
    if earlier is None:
        raise MVExtError(f"Dataset folder {folder} exists and was not written by import-lld (no {MARKER}); refusing "
                         f"to touch it. Choose another dataset id or --name.")
    if not force:
        raise MVExtError(f"Dataset folder {folder} holds an earlier import-lld; add --force to replace the files it "
                         f"wrote (listed in {MARKER}; other files in the folder stay, files changed since are kept as "
                         f"a .bak).")
    return earlier


def _remove_earlier(folder: str, earlier: dict) -> list[str]:
    """Remove the earlier import's files, the marker last (it stays until every file is gone, so a kill leaves a
    folder that ``--force`` can clear again). A file changed since that import wrote it (its SHA-256 differs from
    the marker's) is renamed to a timestamped ``.bak`` instead. A listed file without a hash: of a completed import
    it was not written by it (kept as ``.bak``), of an interrupted one it was (removed). Markers of earlier versions
    (no completion flag, no hashes) keep a ``.bak`` of every label and table, whose changes cannot be told. Returns
    the backups."""
    removed, backups = 0, []
    hashes = earlier["sha256"]
    for rel in earlier["written"]:
        path = os.path.join(folder, rel)
        if rel == MARKER or not (os.path.isfile(path) or os.path.islink(path)):
            continue
        if rel in hashes:
            changed = os.path.islink(path) or _sha256(path) != hashes[rel]
        elif earlier["complete"] is None and not hashes:
            changed = not rel.startswith("imagesT")
        else:
            changed = earlier["complete"] is True
        if changed:
            backup = backup_path(path)
            os.replace(path, backup)
            backups.append(backup)
        else:
            os.remove(path)
            removed += 1
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        path = os.path.join(folder, sub)
        if os.path.isdir(path) and not os.listdir(path):
            os.rmdir(path)
    logger.info("removed %d file(s) of the earlier import-lld from %s", removed, folder)
    for backup in backups:
        logger.warning("WARNING: kept %s: the file was changed after the earlier import-lld wrote it", backup)
    return backups


class _RawFolderLock:
    """An exclusive ``flock`` on the raw folder for the whole import: two ``import-lld`` runs into one raw folder at
    once (same id with another name, or the same dataset twice) would each pass the checks before the other writes.
    The second is refused, naming the folder. Nothing is written for the lock; where ``fcntl`` does not exist
    (Windows) no lock is taken."""

    def __init__(self, raw: str):
        self.raw, self.fd = raw, None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:
            return self
        self.fd = os.open(self.raw, os.O_RDONLY)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            raise MVExtError(f"Another import-lld is writing into the raw folder {self.raw} at this moment; run "
                             f"imports into one raw folder one after the other.") from None
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the lock
        return False


def import_tables(cases: Sequence[CaseFiles], planned_folds) -> list[str]:
    """The side files an import writes beside its cases (relative paths): ``labelsTs/classification.csv`` only with
    labelled test cases, ``splits_final.json`` only with the organisers' folds."""
    return ["dataset.json", GROUPS, LESIONS, ALIGNMENT_RECORD, REPORT, "missing_phases.json"] \
        + ([os.path.join("labelsTs", "classification.csv")] if any(c.split == "test" for c in cases) else []) \
        + ([SPLITS_FILE] if planned_folds else [])


def claim_dataset_folder(folder: str, release: str, files: Sequence[str], tables: Sequence[str],
                         earlier: Optional[dict]) -> list[str]:
    """Before the first case is written: refuse a file of the new import that an earlier import did not write, remove
    the earlier import's files (:func:`_remove_earlier`; returns its backups), create the folders and write the new
    marker. Until the import completes the marker lists the earlier and the new files, so a kill at any point leaves
    a folder that a rerun with ``--force`` clears."""
    ours = set(earlier["written"] if earlier else [])
    foreign = [f for f in list(files) + list(tables) if f not in ours and os.path.lexists(os.path.join(folder, f))]
    if foreign:
        raise MVExtError(f"{os.path.join(folder, foreign[0])} exists and was not written by import-lld"
                         f"{f' (and {len(foreign) - 1} more)' if len(foreign) > 1 else ''}; refusing to replace it.")
    backups = []
    if earlier is not None:
        _write_marker(folder, release, list(ours) + list(files) + list(tables), earlier["sha256"])
        backups = _remove_earlier(folder, earlier)
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    _write_marker(folder, release, list(files) + list(tables))
    return backups


def complete_import(folder: str, release: str, full_name: str, report: dict, train: Sequence, files: Sequence[str],
                    tables: Sequence[str], reference_phase: str, description: str, generate_dataset_json) -> None:
    """The last writes of an import: ``import_report.json``, then ``dataset.json`` (nnU-Net's writer; its presence
    means the import finished: the classes of the training cases ``train``, the reference phase), then the marker
    with every written file's SHA-256, marked complete."""
    with open(os.path.join(folder, REPORT), "w") as f:
        json.dump(report, f, indent=1)
    generate_dataset_json(
        folder, {str(i): p for i, p in enumerate(PHASES)}, dict(LABELS), len(train), FILE_ENDING,
        dataset_name=full_name, reference="LLD-MMRI 2023, https://github.com/LMMMEng/LLD-MMRI2023",
        description=description, license="see the LLD-MMRI 2023 data use agreement",
        converted_by="nnunet-mvext import-lld", reference_phase=reference_phase,
        classification={"class_names": {str(k): n for k, n in enumerate(CLASS_NAMES)},
                        "labels": {c.case_id: int(c.category) for c in sorted(train, key=lambda c: c.case_id)}})
    written = list(files) + [t for t in tables if os.path.isfile(os.path.join(folder, t))]
    _write_marker(folder, release, list(files) + list(tables),
                  {rel: _sha256(os.path.join(folder, rel)) for rel in written}, complete=True)


def _write_csv(path: str, header: Sequence[str], rows) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _class_counts(cases: list[CasePlan]) -> dict:
    return {name: {"cases": sum(c.category == k for c in cases),
                   "patients": len({c.patient for c in cases if c.category == k})}
            for k, name in enumerate(CLASS_NAMES)}


#: a case whose output grid holds more voxels than this is refused before any file is written (a --margin typo)
MAX_CASE_VOXELS = 256 * 1024 ** 2


def _flipped(flipped_patients: Optional[str]) -> tuple[set, str]:
    """The patients to flip and where the list came from: ``published`` (the built-in list, :data:`geometry.
    PUBLISHED_FLIPPED_PATIENTS`) or a file."""
    if flipped_patients is None:
        return set(), ""
    if flipped_patients == "published":
        return {p for names in PUBLISHED_FLIPPED_PATIENTS.values() for p in names}, "published"
    return read_flipped_patients(flipped_patients), os.path.abspath(flipped_patients)


def _test_set(test_annotation: Optional[str], test_images: Optional[str], release_dir: str,
              annotation: dict) -> tuple[dict, Optional[str]]:
    """``({patient: entries}, images folder)`` of the test annotation file; refuses a patient in both files."""
    if test_annotation is None:
        if test_images is not None:
            raise MVExtError("--test-images goes with --test-annotation (the annotation file of the test patients).")
        return {}, None
    if not os.path.isfile(test_annotation):
        raise MVExtError(f"--test-annotation {test_annotation} does not exist.")
    test = read_annotation(release_dir, path=test_annotation)
    both = sorted(set(test) & set(annotation))
    if both:
        raise MVExtError(f"{len(both)} patient(s) are in both {test_annotation} and Annotation.json: "
                         f"{', '.join(both[:10])}{' ...' if len(both) > 10 else ''}. A patient is a training or a test "
                         f"patient, not both.")
    images = test_images or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(test_annotation))), "images")
    if not os.path.isdir(images):
        raise MVExtError(f"The test images folder {images} does not exist; give it with --test-images (the folder "
                         f"of <patient>/<studyUID>/<seriesUID>.nii.gz of the test patients).")
    return test, images


def _preprocessed_split_differs(full_name: str, raw_split: str) -> Optional[str]:
    """The preprocessed ``splits_final.json`` of the dataset when it exists and differs from ``raw_split`` (nnU-Net's
    planner copies the raw one and asserts that both are equal), else None."""
    from nnunetv2.paths import nnUNet_preprocessed

    if not nnUNet_preprocessed.is_set():
        return None
    path = os.path.join(str(nnUNet_preprocessed), full_name, SPLITS_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f, open(raw_split) as g:
            return None if json.load(f) == json.load(g) else path
    except (OSError, ValueError):
        return path


def _geometry_report(plan: ImportPlan, geometry: str, flipped: set, flip_source: str, patients: set) -> dict:
    from nnunet_mvext.lld_mmri.geometry import ORIGIN_TOLERANCE_MM, SPACING_TOLERANCE

    return {"source": geometry, "convention": "spacing (pixel_spacing x, y, slice_spacing), origin, the header's "
                                              "direction (nnunet_mvext/lld_mmri/geometry.py)",
            "series_per_field_source": plan.geometry_fields,
            "header_json_disagreements": {"series_per_field": plan.geometry_disagreements,
                                          "tolerances": {"spacing_relative": SPACING_TOLERANCE,
                                                         "origin_mm": ORIGIN_TOLERANCE_MM}},
            "fallbacks": plan.geometry_warnings,
            "flipped_patients": {"list": flip_source or None, "applied": sorted(flipped & patients),
                                 "listed_not_in_release": sorted(flipped - patients)}}


def import_release(release_dir: str, dataset_id: int, name: str = DEFAULT_NAME, raw_folder: Optional[str] = None,
                   alignment: str = "crop", reference_phase: str = DEFAULT_REFERENCE_PHASE,
                   margin: Optional[Sequence[int]] = None, test_patients: Optional[str] = None, force: bool = False,
                   num_processes: int = 1, geometry: Optional[str] = "json", flipped_patients: Optional[str] = None,
                   test_annotation: Optional[str] = None, test_images: Optional[str] = None) -> ImportResult:
    """Import the release into ``raw_folder`` (default ``$nnUNet_raw``) as ``Dataset<ID>_<name>`` (module
    docstring). ``margin``: crop margin in voxels ``(x, y, z)`` (default the official 16, 16, 2);
    ``test_patients``: a text file of labelled patients to hold out (one id per line); ``geometry``: ``json`` (the
    annotation's spacing and origin, :mod:`~nnunet_mvext.lld_mmri.geometry`) or ``header``; ``flipped_patients``:
    a file of patient ids whose series are stored upside down, or ``published`` for the published list;
    ``test_annotation`` / ``test_images``: the test patients' annotation file and images folder (default: the
    ``images/`` beside the annotation file's ``labels/`` folder)."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
    from nnunetv2.paths import nnUNet_raw

    if alignment not in ALIGNMENTS:
        raise MVExtError(f"--alignment '{alignment}': allowed: {', '.join(ALIGNMENTS)}.")
    geometry = geometry or "json"
    if geometry not in GEOMETRY_SOURCES:
        raise MVExtError(f"--geometry '{geometry}': allowed: {', '.join(GEOMETRY_SOURCES)}.")
    if reference_phase not in PHASES:
        raise MVExtError(f"--reference-phase '{reference_phase}': allowed: {', '.join(repr(p) for p in PHASES)}.")
    if margin is not None and alignment != "crop":
        raise MVExtError("--margin applies to --alignment crop only.")
    margin = tuple(OFFICIAL_MARGIN if margin is None else margin)
    if len(margin) != 3 or any(int(m) != m or m < 0 for m in margin):
        raise MVExtError(f"--margin {' '.join(map(str, margin))}: give three voxel counts >= 0 (x y z), e.g. 16 16 2.")
    if not 1 <= dataset_id <= 999:
        raise MVExtError(f"dataset id must be in 1..999, got {dataset_id}.")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
        raise MVExtError(f"--name '{name}': use letters, digits, '_' and '-' (nnU-Net's folder is Dataset<ID>_<name>).")
    if num_processes < 1:
        raise MVExtError(f"-np must be >= 1, got {num_processes}.")
    raw = raw_folder or (str(nnUNet_raw) if nnUNet_raw.is_set() else None)
    if not raw:
        raise MVExtError("Give the raw folder with --raw or set nnUNet_raw.")
    try:
        os.makedirs(raw, exist_ok=True)
    except OSError as e:
        raise MVExtError(f"The raw folder {raw} cannot be created ({e.strerror}); nothing was written.") from None
    if not os.access(raw, os.W_OK | os.X_OK):
        raise MVExtError(f"The raw folder {raw} is not writable for this user; nothing was written.")
    if os.path.isdir(release_dir) and not os.path.isdir(os.path.join(release_dir, "images")):
        crops = os.path.isdir(os.path.join(release_dir, CROPS_DIR))
        raise MVExtError(f"{release_dir} has no images/ folder (the whole volumes)" + (
            "; it holds the official crops (classification_dataset/): import them with import-lld --from-crops "
            "(nnunet_mvext.lld_mmri.import_crops)." if crops else "; give the folder that holds images/ and labels/."))
    full_name = f"Dataset{dataset_id:03d}_{name}"
    folder = os.path.join(raw, full_name)
    with _RawFolderLock(raw):
        clashes = _dataset_ids_in_use(raw, dataset_id, full_name)
        if clashes:
            raise MVExtError(f"Dataset id {dataset_id} is taken by {clashes[0]}; nnU-Net finds datasets by id, so "
                             f"choose another -d.")
        earlier = _check_target(folder, force)
        if earlier is not None and not os.access(folder, os.W_OK | os.X_OK):
            raise MVExtError(f"The dataset folder {folder} is not writable for this user; nothing was changed.")
        return _import_locked(release_dir, dataset_id, full_name, folder, raw, alignment, reference_phase, margin,
                              test_patients, earlier, num_processes, geometry, flipped_patients, test_annotation,
                              test_images, generate_dataset_json)


def _import_locked(release_dir, dataset_id, full_name, folder, raw, alignment, reference_phase, margin, test_patients,
                   earlier, num_processes, geometry, flipped_patients, test_annotation, test_images,
                   generate_dataset_json) -> ImportResult:
    annotation = read_annotation(release_dir)
    test_annotations, test_images_folder = _test_set(test_annotation, test_images, release_dir, annotation)
    held_out = _read_test_patients(test_patients, list(annotation))
    flipped, flip_source = _flipped(flipped_patients)
    logger.info("Annotation.json: %d patients, %d series%s; planning the %s alignment on the reference phase %s "
                "with the %s geometry", len(annotation), sum(len(v) for v in annotation.values()),
                f"; test annotation: {len(test_annotations)} patients" if test_annotations else "", alignment,
                reference_phase, "annotation's (Annotation.json)" if geometry == "json" else "headers'")
    plan = ImportPlan()
    images = os.path.join(release_dir, "images")
    for patient, entries in annotation.items():
        plan_patient(patient, entries, images, alignment, reference_phase, margin, held_out, plan, geometry,
                     patient in flipped)
    for patient, entries in test_annotations.items():
        plan_patient(patient, entries, test_images_folder, alignment, reference_phase, margin, set(), plan, geometry,
                     patient in flipped, split="test")
    if not plan.cases:
        lesions = sum(len(e.lesions) for entries in annotation.values() for e in entries)
        why = ("no series of Annotation.json annotates a lesion" if not lesions else
               f"{len(plan.skipped)} skipped entries, e.g. {plan.skipped[0].message()}" if plan.skipped else
               "no patient has a usable series")
        raise MVExtError(f"{release_dir}: no case could be imported ({why}); nothing was written.")
    too_large = [c for c in plan.cases if int(np.prod(c.output.size)) > MAX_CASE_VOXELS]
    if too_large:
        c = too_large[0]
        raise MVExtError(f"case {c.case_id} would be {' x '.join(map(str, c.output.size))} voxels (more than "
                         f"{MAX_CASE_VOXELS} per channel; --margin {' '.join(map(str, margin))}); nothing was "
                         f"written. Give a smaller --margin.")
    files = [f for case in plan.cases for f in case.files()]
    train = [c for c in plan.cases if c.split == "train"]
    planned_folds = plan_official_splits(release_dir, {c.case_id: c.patient for c in train},
                                         {c.case_id: int(c.category) for c in train})
    tables = import_tables(plan.cases, planned_folds)
    backups = claim_dataset_folder(folder, release_dir, files, tables, earlier)
    if earlier is not None:
        from nnunetv2.paths import nnUNet_preprocessed

        if nnUNet_preprocessed.is_set() and os.path.isdir(os.path.join(str(nnUNet_preprocessed), full_name)):
            logger.warning("WARNING: %s holds the preprocessed data of the earlier import; run "
                           "nnUNetv2_plan_and_preprocess -d %d again before training.",
                           os.path.join(str(nnUNet_preprocessed), full_name), dataset_id)

    by_patient: dict[str, list[CasePlan]] = {}
    for case in plan.cases:
        by_patient.setdefault(case.patient, []).append(case)
    groups = list(by_patient.values())
    if num_processes == 1:
        outcomes = [_write_patient(g, folder, False) for g in groups]
    else:
        with ProcessPoolExecutor(num_processes, mp_context=get_context("spawn"),
                                 initializer=_die_with_parent) as pool:
            outcomes = list(pool.map(_write_patient, groups, [folder] * len(groups), [True] * len(groups)))
    missing: dict[str, list[str]] = {}
    repeated: list[dict] = []
    for group, results in zip(groups, outcomes):
        for case, (absent, failed, repeats) in zip(group, results):
            if absent:
                missing[case.case_id] = absent
            for entry in failed:
                if entry not in plan.skipped:
                    plan.skipped.append(entry)
            repeated += [r for r in repeats if r not in repeated]

    test = [c for c in plan.cases if c.split != "train"]
    labelled_test = [c for c in test if c.split == "test"]
    # the side files first, dataset.json last: its presence means that the import finished (nnU-Net needs it)
    _write_csv(os.path.join(folder, GROUPS), ("case_id", "group"), [(c.case_id, c.patient) for c in train])
    _write_csv(os.path.join(folder, LESIONS), LESION_COLUMNS,
               [(c.case_id, c.patient, ";".join(c.lesions), c.split, c.category, c.reference_phase,
                 f"{c.box_volume_mm3:.3f}") for c in plan.cases])
    if labelled_test:
        _write_csv(os.path.join(folder, "labelsTs", "classification.csv"), ("case_id", "class"),
                   [(c.case_id, c.category) for c in labelled_test])
    write_missing_phases(folder, missing)
    folds = write_splits(folder, planned_folds) if planned_folds else None
    if folds:
        folds["preprocessed_split_differs"] = _preprocessed_split_differs(full_name, folds["splits_file"])
    with open(os.path.join(folder, ALIGNMENT_RECORD), "w") as f:
        json.dump({c.case_id: {"output": c.output.as_dict(), "reference_phase": c.reference_phase,
                               "geometry_source": geometry,
                               "phases": {p: {"series": c.sources[p][0], "placed_by": c.placed_by[p],
                                              "sampling": c.sampling[p].as_dict(),
                                              "series_grid": c.grids[p].as_dict(), "geometry": c.geometry[p]}
                                          for p in c.sampling}}
                   for c in plan.cases}, f, indent=1)
    all_patients = set(annotation) | set(test_annotations)
    report = {
        "release": os.path.abspath(release_dir), "dataset": full_name, "alignment": alignment,
        "reference_phase": reference_phase, "margin_voxels_xyz": list(margin) if alignment == "crop" else None,
        "test_annotation": os.path.abspath(test_annotation) if test_annotation else None,
        "geometry": _geometry_report(plan, geometry, flipped, flip_source, all_patients),
        "official_folds": folds,
        "counts": {"patients_in_release": len(annotation),
                   "patients_in_test_annotation": len(test_annotations),
                   "patients_imported": len(by_patient),
                   "series_in_release": sum(len(v) for v in annotation.values()),
                   "cases": {"imagesTr": len(train), "imagesTs": len(test),
                             "imagesTs_labelled": len(labelled_test)},
                   "training_cases_per_class": _class_counts(train),
                   "cases_with_missing_phases": len(missing), "cases_with_mask_labels": sum(c.mask is not None
                                                                                          for c in plan.cases),
                   "skipped_or_repaired_entries": len(plan.skipped),
                   "series_far_from_the_other_phases": len(plan.orientation),
                   "series_with_repeated_slices": len(repeated)},
        "skipped": [asdict(s) for s in plan.skipped],
        "disagreements": plan.disagreements,
        "patients_without_case": plan.patients_without_case,
        "orientation_outliers": plan.orientation,
        "repeated_slices": repeated,
        "backups_of_changed_files": backups,
    }
    complete_import(folder, release_dir, full_name, report, train, files, tables, reference_phase,
                    f"imported by nnunet-mvext import-lld from {os.path.abspath(release_dir)} ({alignment} alignment, "
                    f"reference phase {reference_phase}, {geometry} geometry); the lesion label is its box",
                    generate_dataset_json)

    _log_outcome(plan, report, repeated, folder, train, test, labelled_test, missing, dataset_id)
    return ImportResult(full_name, folder, tuple(c.case_id for c in train), tuple(c.case_id for c in test),
                        tuple(plan.skipped), missing)


def _log_outcome(plan: ImportPlan, report: dict, repeated: list, folder: str, train: list, test: list,
                 labelled_test: list, missing: dict, dataset_id: int) -> None:
    for entry in plan.skipped:
        logger.warning("skipped/repaired: %s", entry.message())
    for d in plan.disagreements:
        logger.warning("category disagreement: patient %s%s: %s; used %s", d["patient"],
                       f", lesion {d['lesion']}" if d["lesion"] is not None else "", d["categories"], d["used"])
    for p in plan.patients_without_case:
        logger.warning("patient %s not imported: %s", p["patient"], p["why"])
    geometry = report["geometry"]
    fallbacks = geometry["fallbacks"]
    if fallbacks:
        logger.warning("WARNING: %d geometry field(s) of series fell back (import_report.json 'geometry'), e.g. "
                       "patient %s, %s: %s", len(fallbacks), fallbacks[0]["patient"], fallbacks[0]["phase"],
                       fallbacks[0]["warning"])
    disagreeing = geometry["header_json_disagreements"]["series_per_field"]
    if disagreeing:
        logger.warning("header and Annotation.json disagree (beyond 1 %% in spacing or 0.5 mm in origin) in %s; the "
                       "%s geometry is used", ", ".join(f"{n} series' {k}" for k, n in disagreeing.items()),
                       geometry["source"])
    if geometry["flipped_patients"]["applied"]:
        logger.info("z axis reversed in the geometry of every series of %d patient(s) (--flipped-patients): %s",
                    len(geometry["flipped_patients"]["applied"]), ", ".join(geometry["flipped_patients"]["applied"]))
    for o in plan.orientation:
        logger.warning("orientation: patient %s, lesion %s, %s series %s: its box centre lies %.1f mm from the other "
                       "phases' median (threshold %.1f mm); flipped or wrong origin? (reported only)", o["patient"],
                       o["lesion"], o["phase"], o["series"], o["distance_mm"], o["threshold_mm"])
    for r in repeated:
        logger.warning("repeated slices: patient %s, %s series %s: %s (reported only)", r["patient"], r["phase"],
                       r["series"], r["repeated"])
    counts = _class_counts(train)
    logger.info("Wrote %s: %d training case(s) of %d patient(s), %d test case(s) (%d labelled, %d unreleased); "
                "%d case(s) with a missing phase; %d skipped or repaired entries (import_report.json).",
                folder, len(train), len({c.patient for c in train}), len(test), len(labelled_test),
                len(test) - len(labelled_test), len(missing), len(plan.skipped))
    logger.info("Training cases per class: %s", ", ".join(f"{n} {v['cases']} ({v['patients']} patients)"
                                                          for n, v in counts.items()))
    empty = [n for n, v in counts.items() if not v["cases"]]
    if empty:
        logger.warning("WARNING: no training case of class(es) %s.", ", ".join(empty))
    folds = report["official_folds"]
    if folds:
        logger.info("The organisers' %d folds (classification_dataset/labels/train_fold*.txt) are nnU-Net's folds: %s",
                    folds["folds"], folds["splits_file"])
        for message in folds["messages"]:
            logger.warning("official folds: %s", message)
        if folds.get("preprocessed_split_differs"):
            logger.warning("WARNING: %s holds other folds than the official ones just written; "
                           "nnUNetv2_plan_and_preprocess stops at an AssertionError while both differ. Keep the "
                           "official folds: move that file away (e.g. to splits_final.json.bak) before planning; keep "
                           "yours: nnunet-mvext make-splits %d --force ... writes yours to both.",
                           folds["preprocessed_split_differs"], dataset_id)
        logger.info("Next: nnUNetv2_plan_and_preprocess -d %d -c 3d_fullres --verify_dataset_integrity (nnU-Net "
                    "copies the official splits_final.json)", dataset_id)
    else:
        logger.info("Next: nnUNetv2_plan_and_preprocess -d %d -c 3d_fullres --verify_dataset_integrity; "
                    "nnunet-mvext make-splits %d --groups %s", dataset_id, dataset_id, os.path.join(folder, GROUPS))
