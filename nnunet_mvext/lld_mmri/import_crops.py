"""``import-lld`` on a release that holds only the official crops (``classification_dataset/``, no ``images/``).

Input::

    RELEASE/classification_dataset/images/<case>/<phase>.nii.gz    crop_roi.py's crops (spacing 1, origin 0)
    RELEASE/classification_dataset/labels/labels.txt, labels_val_inaccessible.txt, train_fold*.txt, val_fold*.txt
    RELEASE/labels/Annotation.json                                  optional (the geometry and the boxes)

``<case>`` is ``<patient>`` for lesion 0 and ``<patient>_<idx>`` for lesion ``idx``
(:mod:`~nnunet_mvext.lld_mmri.official_crops`). The dataset has the layout :mod:`~nnunet_mvext.lld_mmri.
import_release` writes (``imagesTr``/``labelsTr``/``imagesTs``/``labelsTs``, ``dataset.json`` through nnU-Net's
``generate_dataset_json`` with the ``classification`` block, ``groups.csv``, ``lesions.csv``,
``missing_phases.json``, ``alignment.json``, ``import_report.json``, the marker file), one case per lesion,
``<patient>_<lesion>`` as the crop alignment names them, so the rest of docs/how_to/lld_mmri.md runs unchanged;
where the fold files exist their folds are written to the raw ``splits_final.json``
(:func:`~nnunet_mvext.lld_mmri.official_folds.plan_official_splits`).

**Geometry of a crop** (``geometry="json"``, default): the series' JSON spacing
(:func:`~nnunet_mvext.lld_mmri.geometry.series_grid`, field by field, its fallbacks reported) and the origin of the
crop's first voxel in the series' frame, ``o_crop = o + D diag(s) start`` with ``start`` the series index of crop voxel
``(0, 0, 0)`` (:func:`~nnunet_mvext.lld_mmri.official_crops.crop_start`: ``(x_min - 16, y_min - 16,
max(z_min - 2, 0))``). ``geometry="header"``: the crop's header (1 x 1 x 1 voxels, each phase at its own voxel scale),
for comparison. **Without ``Annotation.json``** the spacing is unknown: refused, unless ``geometry="header"`` is given
explicitly (then imported on voxel units, a named warning in the log and the report). A patient of
``flipped_patients`` gets its z axis reversed on every crop's grid (:func:`~nnunet_mvext.lld_mmri.geometry.
flipped_grid`: right orientation; the absolute z position is not the series' one, which needs the series' slice
count, unknown without the volumes).

**Where the lesion is in a crop**: the JSON box of that series mapped into the crop (:func:`~nnunet_mvext.lld_mmri.
official_crops.box_in_crop`: x and y from index 16, z from ``min(z_min, 2)``). This inverse of crop_roi.py's clamp and
padding needs no series size; **the series size is unknown** here (the JSON does not hold it), so the crop's zero
padding (a box near the image border, and the columns the script's swapped x/y clamp zeroes) is imported as it is,
zeros, and not reported. A crop that cannot hold its JSON box (a JSON of another version) or a phase without a JSON
box of that lesion: the crop's centre is taken instead, reported. Without ``Annotation.json`` the box is the crop
minus the official margin on every side (``16, 16, 2``, clipped to the crop), as for an unclamped crop.

**Alignment** (crop only; ``alignment="resample"`` is refused: the crops hold no common physical frame): the output
grid is the reference phase's crop grid (default ``C+A``; the next phase in :data:`PHASES` order where it has no crop,
reported). Every other phase is resampled (linear, 0 outside) onto that grid translated so that its box centre
falls on the reference box centre (``sampling origin = output origin + c_p - c_ref``, physical centres), so the
lesion's centres coincide as in ``import-lld --alignment crop``. The label is the reference box (value 1). A phase
without a crop is a zero placeholder, named in ``missing_phases.json``.

**Classes**: from ``Annotation.json`` (the lesion's majority category over its series) where present, else from
``labels.txt`` (``labels_val_inaccessible.txt``: -1, unlabelled); a folder in neither is skipped, reported; a
``labels.txt`` class that disagrees with the JSON's is reported. Category -1 cases go to ``imagesTs`` as unlabelled,
``test_patients`` (a file of patient ids) to ``imagesTs``/``labelsTs`` with ``labelsTs/classification.csv``.

**Case folders to patients**: with ``Annotation.json``, ``<name>`` is the patient when it is one, else
``<patient>_<idx>`` split at the last ``_`` (:func:`~nnunet_mvext.lld_mmri.official_folds.name_to_lesion`); a folder
naming no patient of the JSON is skipped, reported. Without it, ``<p>_<idx>`` is lesion ``idx`` of ``<p>`` when ``<p>``
is itself a crop folder or a name of the label files, else the whole name is a patient (lesion 0).

Refused before anything is written (besides :func:`import_release`'s own refusals of ids, names and folders):
``alignment="resample"``, a ``margin`` other than the official one, ``test_annotation`` / ``test_images`` (the test
set holds whole volumes: import it with ``import-lld`` from its folder), no ``classification_dataset/images``, no
crop at all.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk

from nnunet_mvext.classification.missing_phases import write_missing_phases
from nnunet_mvext.errors import MVExtError
from nnunet_mvext.lld_mmri.alignment import OFFICIAL_MARGIN, Grid, box_centre, box_label, placeholder, sample_channel
from nnunet_mvext.lld_mmri.annotation import (
    ANNOTATION_FILE,
    CLASS_NAMES,
    PHASES,
    UNRELEASED,
    Box,
    SeriesEntry,
    majority_category,
    read_annotation,
)
from nnunet_mvext.lld_mmri.geometry import GEOMETRY_SOURCES, flipped_grid, series_grid
from nnunet_mvext.lld_mmri.import_release import (
    ALIGNMENT_RECORD,
    DEFAULT_NAME,
    DEFAULT_REFERENCE_PHASE,
    FILE_ENDING,
    GROUPS,
    LABELS,
    LESION_COLUMNS,
    LESIONS,
    CaseFiles,
    ImportResult,
    Skipped,
    _check_target,
    _dataset_ids_in_use,
    _flipped,
    _header_problem,
    _preference,
    _RawFolderLock,
    _read_test_patients,
    _write_csv,
    claim_dataset_folder,
    complete_import,
    import_tables,
)
from nnunet_mvext.lld_mmri.official_crops import XY_EXTENSION, Z_EXTENSION, box_in_crop, crop_start
from nnunet_mvext.lld_mmri.official_folds import (
    INACCESSIBLE_TXT,
    LABELS_DIR,
    LABELS_TXT,
    name_to_lesion,
    plan_official_splits,
    read_label_file,
    write_splits,
)

logger = logging.getLogger(__name__)

CROPS_DIR = os.path.join("classification_dataset", "images")
CROP_MARGIN = (XY_EXTENSION, XY_EXTENSION, Z_EXTENSION)


@dataclass
class CropPhase:
    """One phase's crop: its file, grid (geometry applied), its box in crop indices and how that box was found."""

    path: str
    grid: Grid
    box: Box
    box_from: str  # "json box" | "crop centre" | "official margin"
    series: str
    geometry: dict


@dataclass
class CropCase(CaseFiles):
    case_id: str
    patient: str
    lesion: str
    folder: str
    split: str
    category: int
    phases: dict = field(default_factory=dict)  # phase -> CropPhase
    reference_phase: str = ""


def _crop_header(path: str) -> Optional[Grid]:
    """The crop's header grid, or None for a file that is missing, unreadable, truncated or not 3D."""
    return _header_problem(path)[0]


def _margin_box(size: Sequence[int]) -> Box:
    """The crop minus the official margin on every side (clipped to the crop, at least one voxel)."""
    lo = [min(m, (n - 1) // 2) for m, n in zip(CROP_MARGIN, size)]
    hi = [max(lo_ + 1, n - m) for lo_, m, n in zip(lo, CROP_MARGIN, size)]
    return Box(lo[0], lo[1], lo[2], hi[0], hi[1], hi[2] - 1)


def _fits(box: Box, size: Sequence[int]) -> bool:
    return box.problem(size) is None


def _folder_lesion(name: str, patients: Optional[set], names: set) -> Optional[tuple[str, str]]:
    if patients is not None:
        return name_to_lesion(name, patients)
    m = re.fullmatch(r"(.+)_(\d+)", name)
    if m and m.group(1) in names:
        return m.group(1), str(int(m.group(2)))
    return name, "0"


def _label_files(release_dir: str) -> tuple[dict, dict]:
    folder = os.path.join(release_dir, LABELS_DIR)
    listed, inaccessible = {}, {}
    for file, target in ((LABELS_TXT, listed), (INACCESSIBLE_TXT, inaccessible)):
        path = os.path.join(folder, file)
        if os.path.isfile(path):
            target.update({n: c for n, c, _ in read_label_file(path)})
    return listed, inaccessible


def _plan_phase(case: CropCase, phase: str, path: str, header: Optional[Grid], entry: Optional[SeriesEntry],
                geometry: str, flipped: bool, skipped: list) -> Optional[CropPhase]:
    if header is None:
        skipped.append(Skipped(case.patient, phase, "", case.lesion, f"unreadable or not 3D crop file {path}",
                               "phase missing: placeholder (zeros) + missing_phases.json"))
        return None
    series = entry.series_uid if entry is not None else ""
    found = entry.lesion(case.lesion) if entry is not None else None
    if found is not None:
        box = box_in_crop(found.box, CROP_MARGIN)
        box_from = "json box"
        if not _fits(box, header.size):
            skipped.append(Skipped(case.patient, phase, series, case.lesion,
                                   f"the JSON box maps to crop indices {box.as_dict()} outside the crop of size "
                                   f"{header.size}", "the crop's centre is the lesion's"))
            found, box, box_from = None, _margin_box(header.size), "crop centre"
    else:
        box, box_from = _margin_box(header.size), "official margin" if entry is None else "crop centre"
        if entry is not None:
            skipped.append(Skipped(case.patient, phase, series, case.lesion, "the lesion has no box in this series of "
                                   "Annotation.json", "the crop's centre is the lesion's"))
    if geometry == "json" and entry is not None:
        geo = series_grid(entry, header, "json")
        start = crop_start(found.box, CROP_MARGIN) if found is not None else np.zeros(3)
        grid = Grid(header.size, geo.grid.spacing, tuple(float(v) for v in geo.grid.physical_point(start)),
                    header.direction)
        info = {"source": "json", "fields": geo.sources, "warnings": list(geo.warnings)}
    else:
        grid = header
        info = {"source": "header", "fields": {"inplane_spacing": "header", "z_spacing": "header",
                                               "origin": "header"}, "warnings": []}
    if flipped:
        grid = flipped_grid(grid)
        info["flipped"] = True
    return CropPhase(path, grid, box, box_from, series, info)


def _series_of_crop(case: CropCase, phase: str, header: Optional[Grid], entries: list,
                    skipped: list) -> Optional[SeriesEntry]:
    """The series a crop was cut from. crop_roi.py loops over every series of the patient and writes
    ``<case>/<phase>.nii.gz`` for each that annotates the lesion, so of several series of one phase the **last** one
    that annotates the lesion (and whose box fits the crop) wrote the file; reported when there were several."""
    holding = [e for e in entries if e.lesion(case.lesion) is not None]
    if not holding:
        return entries[-1] if entries else None
    fitting = [e for e in holding if header is not None
               and _fits(box_in_crop(e.lesion(case.lesion).box, CROP_MARGIN), header.size)]
    chosen = (fitting or holding)[-1]
    if len(holding) > 1:
        skipped.append(Skipped(case.patient, phase, chosen.series_uid, case.lesion,
                               f"{len(holding)} series of this phase annotate the lesion (crop_roi.py wrote the crop "
                               f"of the last)", f"series {chosen.series_uid} is the crop's"))
    return chosen


def _category(patient: str, lesion: str, name: str, entries: Optional[list], listed: dict, inaccessible: dict,
              reference_phase: str, disagreements: list) -> Optional[int]:
    from_files = listed.get(name, inaccessible.get(name))
    if entries is None:
        return from_files
    categories = {}
    for entry in entries:
        found = entry.lesion(lesion)
        if found is not None and entry.phase not in categories:
            categories[entry.phase] = found.category
    if not categories:
        return None
    category = majority_category(categories, reference_phase)
    if from_files is not None and from_files != category:
        disagreements.append({"patient": patient, "lesion": lesion, "case_folder": name, "annotation": category,
                              "label_file": from_files, "used": category,
                              "why": "the label file's class differs from Annotation.json's; the JSON's is used"})
    return category


def _write_case(case: CropCase, folder: str) -> list[str]:
    """Write the case's channels and label; returns the phases written as placeholders."""
    ref = case.phases[case.reference_phase]
    output = ref.grid
    ref_centre = box_centre(output, ref.box)
    missing = []
    for c, phase in enumerate(PHASES):
        target = os.path.join(folder, case.images_folder, f"{case.case_id}_{c:04d}{FILE_ENDING}")
        crop = case.phases.get(phase)
        if crop is None:
            sitk.WriteImage(placeholder(output), target, useCompression=True)
            missing.append(phase)
            continue
        image = sitk.ReadImage(crop.path, sitk.sitkFloat32)
        image.SetSpacing(crop.grid.spacing)
        image.SetOrigin(crop.grid.origin)
        image.SetDirection(crop.grid.direction)
        offset = box_centre(crop.grid, crop.box) - ref_centre
        sampling = Grid(output.size, output.spacing, tuple(float(v) for v in np.array(output.origin) + offset),
                        output.direction)
        sitk.WriteImage(sample_channel(image, sampling, output), target, useCompression=True)
    label = box_label(output, [(ref.box, output)], LABELS["lesion"])
    sitk.WriteImage(label, os.path.join(folder, case.labels_folder, case.case_id + FILE_ENDING), useCompression=True)
    return missing


def import_crops(release_dir: str, dataset_id: int, name: str = DEFAULT_NAME, raw_folder: Optional[str] = None,
                 alignment: str = "crop", reference_phase: str = DEFAULT_REFERENCE_PHASE,
                 margin: Optional[Sequence[int]] = None, test_patients: Optional[str] = None, force: bool = False,
                 num_processes: int = 1, geometry: Optional[str] = None, flipped_patients: Optional[str] = None,
                 test_annotation: Optional[str] = None, test_images: Optional[str] = None) -> ImportResult:
    """Import the official crops of ``release_dir`` (module docstring) into ``raw_folder`` (default ``$nnUNet_raw``)
    as ``Dataset<ID>_<name>``; the keyword arguments are :func:`~nnunet_mvext.lld_mmri.import_release.
    import_release`'s. ``geometry``: ``json`` (default where ``Annotation.json`` exists) or ``header`` (required,
    explicitly, without it). ``num_processes`` is accepted for the same call and not used (crops are small)."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
    from nnunetv2.paths import nnUNet_raw

    if alignment != "crop":
        raise MVExtError(f"--alignment '{alignment}': the official crops (classification_dataset/) hold no common "
                         f"physical frame to resample the phases in; only --alignment crop imports them.")
    if margin is not None and tuple(margin) != tuple(OFFICIAL_MARGIN):
        raise MVExtError(f"--margin {' '.join(map(str, margin))}: the official crops were cut with the official margin "
                         f"{' '.join(map(str, OFFICIAL_MARGIN))}; another margin needs the whole volumes (images/).")
    if test_annotation is not None or test_images is not None:
        raise MVExtError("--test-annotation / --test-images: the test set holds whole volumes; import it with "
                         "import-lld from the folder that holds its images/ and labels/ (a crops-only release has no "
                         "volumes to crop the test patients from).")
    if reference_phase not in PHASES:
        raise MVExtError(f"--reference-phase '{reference_phase}': allowed: {', '.join(repr(p) for p in PHASES)}.")
    if geometry is not None and geometry not in GEOMETRY_SOURCES:
        raise MVExtError(f"--geometry '{geometry}': allowed: {', '.join(GEOMETRY_SOURCES)}.")
    if not 1 <= dataset_id <= 999:
        raise MVExtError(f"dataset id must be in 1..999, got {dataset_id}.")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
        raise MVExtError(f"--name '{name}': use letters, digits, '_' and '-' (nnU-Net's folder is Dataset<ID>_<name>).")
    crops_root = os.path.join(release_dir, CROPS_DIR)
    if not os.path.isdir(crops_root):
        raise MVExtError(f"{crops_root} does not exist; the official crops lie in classification_dataset/images/"
                         f"<case>/<phase>.nii.gz.")
    has_json = os.path.isfile(os.path.join(release_dir, ANNOTATION_FILE))
    if geometry is None:
        if not has_json:
            raise MVExtError(f"{os.path.join(release_dir, ANNOTATION_FILE)} does not exist, so the crops' spacing is "
                             f"unknown (their headers say 1 x 1 x 1 mm). Put the release's labels/Annotation.json "
                             f"beside classification_dataset/, or give --geometry header to import the crops on voxel "
                             f"units (each phase at its own voxel scale).")
        geometry = "json"
    if geometry == "json" and not has_json:
        raise MVExtError(f"--geometry json needs {os.path.join(release_dir, ANNOTATION_FILE)}; it does not exist.")
    raw = raw_folder or (str(nnUNet_raw) if nnUNet_raw.is_set() else None)
    if not raw:
        raise MVExtError("Give the raw folder with --raw or set nnUNet_raw.")
    os.makedirs(raw, exist_ok=True)
    full_name = f"Dataset{dataset_id:03d}_{name}"
    folder = os.path.join(raw, full_name)
    with _RawFolderLock(raw):
        clashes = _dataset_ids_in_use(raw, dataset_id, full_name)
        if clashes:
            raise MVExtError(f"Dataset id {dataset_id} is taken by {clashes[0]}; nnU-Net finds datasets by id, so "
                             f"choose another -d.")
        earlier = _check_target(folder, force)
        return _import(release_dir, dataset_id, full_name, folder, reference_phase, test_patients, earlier,
                       geometry, has_json, flipped_patients, generate_dataset_json)


def _plan(release_dir: str, reference_phase: str, test_patients: Optional[str], geometry: str, has_json: bool,
          flipped: set, skipped: list, disagreements: list) -> tuple[list[CropCase], Optional[dict]]:
    annotation = read_annotation(release_dir) if has_json else None
    listed, inaccessible = _label_files(release_dir)
    crops_root = os.path.join(release_dir, CROPS_DIR)
    folders = sorted(d for d in os.listdir(crops_root) if os.path.isdir(os.path.join(crops_root, d)))
    if not folders:
        raise MVExtError(f"{crops_root} holds no case folder.")
    names = set(folders) | set(listed) | set(inaccessible)
    patients = set(annotation) if annotation is not None else None
    found = {}
    for name in folders:
        where = _folder_lesion(name, patients, names)
        if where is None:
            skipped.append(Skipped(name, "", "", None, "the crop folder names no patient of Annotation.json",
                                   "not imported"))
            continue
        found[name] = where
    held_out = _read_test_patients(test_patients, sorted({p for p, _ in found.values()}))
    cases = []
    for name, (patient, lesion) in found.items():
        entries = annotation[patient] if annotation is not None else None
        category = _category(patient, lesion, name, entries, listed, inaccessible, reference_phase, disagreements)
        if category is None:
            skipped.append(Skipped(patient, "", "", lesion, f"crop folder {name}: no class (the lesion is in neither "
                                   f"Annotation.json nor the label files)", "not imported"))
            continue
        split = "unlabelled" if category == UNRELEASED else "test" if patient in held_out else "train"
        case = CropCase(f"{patient}_{lesion}", patient, lesion, name, split, category)
        by_phase: dict[str, list] = {}
        for entry in entries or []:
            by_phase.setdefault(entry.phase, []).append(entry)
        for phase in PHASES:
            path = os.path.join(crops_root, name, f"{phase}.nii.gz")
            if not os.path.isfile(path):
                skipped.append(Skipped(patient, phase, "", lesion, f"no crop {path}",
                                       "phase missing: placeholder (zeros) + missing_phases.json"))
                continue
            header = _crop_header(path)
            entry = _series_of_crop(case, phase, header, by_phase.get(phase, []), skipped)
            crop = _plan_phase(case, phase, path, header, entry, geometry, patient in flipped, skipped)
            if crop is not None:
                case.phases[phase] = crop
        ref = next((p for p in _preference(reference_phase) if p in case.phases), None)
        if ref is None:
            skipped.append(Skipped(patient, "", "", lesion, f"crop folder {name}: no readable crop", "not imported"))
            continue
        if ref != reference_phase:
            skipped.append(Skipped(patient, reference_phase, "", lesion, "the reference phase has no crop",
                                   f"{ref} is the reference of this case"))
        case.reference_phase = ref
        cases.append(case)
    return cases, annotation


def _import(release_dir, dataset_id, full_name, folder, reference_phase, test_patients, earlier, geometry, has_json,
            flipped_patients, generate_dataset_json) -> ImportResult:
    flipped, flip_source = _flipped(flipped_patients)
    skipped: list[Skipped] = []
    disagreements: list[dict] = []
    cases, annotation = _plan(release_dir, reference_phase, test_patients, geometry, has_json, flipped, skipped,
                              disagreements)
    if not cases:
        raise MVExtError(f"{release_dir}: no crop case could be imported ({len(skipped)} skipped entries"
                         f"{', e.g. ' + skipped[0].message() if skipped else ''}); nothing was written.")
    files = [f for case in cases for f in case.files()]
    train = [c for c in cases if c.split == "train"]
    planned_folds = plan_official_splits(release_dir, {c.case_id: c.patient for c in train},
                                         {c.case_id: c.category for c in train})
    tables = import_tables(cases, planned_folds)
    backups = claim_dataset_folder(folder, release_dir, files, tables, earlier)

    missing = {}
    for case in cases:
        absent = _write_case(case, folder)
        if absent:
            missing[case.case_id] = absent
    test = [c for c in cases if c.split != "train"]
    labelled_test = [c for c in test if c.split == "test"]
    _write_csv(os.path.join(folder, GROUPS), ("case_id", "group"), [(c.case_id, c.patient) for c in train])
    _write_csv(os.path.join(folder, LESIONS), LESION_COLUMNS,
               [(c.case_id, c.patient, c.lesion, c.split, c.category, c.reference_phase,
                 f"{_volume(c):.3f}") for c in cases])
    if labelled_test:
        _write_csv(os.path.join(folder, "labelsTs", "classification.csv"), ("case_id", "class"),
                   [(c.case_id, c.category) for c in labelled_test])
    write_missing_phases(folder, missing)
    with open(os.path.join(folder, ALIGNMENT_RECORD), "w") as f:
        json.dump({c.case_id: {"output": c.phases[c.reference_phase].grid.as_dict(),
                               "reference_phase": c.reference_phase, "geometry_source": geometry,
                               "crop_folder": c.folder,
                               "phases": {p: {"crop": cp.path, "series": cp.series, "crop_grid": cp.grid.as_dict(),
                                              "box_in_crop": cp.box.as_dict(), "placed_by": cp.box_from,
                                              "geometry": cp.geometry} for p, cp in c.phases.items()}}
                   for c in cases}, f, indent=1)
    folds = write_splits(folder, planned_folds) if planned_folds else None
    fallbacks = [{"patient": c.patient, "lesion": c.lesion, "phase": p, "warning": w}
                 for c in cases for p, cp in c.phases.items() for w in cp.geometry["warnings"]]
    report = {
        "release": os.path.abspath(release_dir), "dataset": full_name, "input": "official crops "
        "(classification_dataset/)", "alignment": "crop", "reference_phase": reference_phase,
        "margin_voxels_xyz": list(OFFICIAL_MARGIN),
        "geometry": {"source": geometry, "annotation_json": has_json, "fallbacks": fallbacks,
                     "warning": None if has_json else "no Annotation.json: crops imported on voxel units "
                                                      "(spacing 1 x 1 x 1, --geometry header)",
                     "series_size": "unknown (crops only): the crops' zero padding is imported as it is",
                     "flipped_patients": {"list": flip_source or None,
                                          "applied": sorted(flipped & {c.patient for c in cases})}},
        "counts": {"crop_folders_imported": len(cases),
                   "patients_imported": len({c.patient for c in cases}),
                   "cases": {"imagesTr": len(train), "imagesTs": len(test), "imagesTs_labelled": len(labelled_test)},
                   "training_cases_per_class": {n: sum(c.category == k for c in train)
                                                for k, n in enumerate(CLASS_NAMES)},
                   "cases_with_missing_phases": len(missing), "skipped_or_repaired_entries": len(skipped),
                   "phases_placed_by": {k: sum(cp.box_from == k for c in cases for cp in c.phases.values())
                                        for k in ("json box", "crop centre", "official margin")}},
        "skipped": [asdict(s) for s in skipped],
        "disagreements": disagreements,
        "official_folds": folds,
        "backups_of_changed_files": backups,
    }
    complete_import(folder, release_dir, full_name, report, train, files, tables, reference_phase,
                    f"imported by nnunet-mvext import-lld from the official crops of {os.path.abspath(release_dir)} "
                    f"(crop alignment, reference phase {reference_phase}, {geometry} geometry); the lesion label is "
                    f"its box", generate_dataset_json)
    for entry in skipped:
        logger.warning("skipped/repaired: %s", entry.message())
    for d in disagreements:
        logger.warning("class disagreement: %s", d)
    if not has_json:
        logger.warning("WARNING: no Annotation.json: the crops were imported on voxel units (spacing 1 x 1 x 1, "
                       "--geometry header); nnU-Net plans for isotropic data that is not.")
    if folds:
        for message in folds["messages"]:
            logger.warning("official folds: %s", message)
        logger.info("Official folds written to %s (nnU-Net copies it at planning).", folds["splits_file"])
    logger.info("Wrote %s from the official crops: %d training case(s), %d test case(s) (%d labelled); %d case(s) "
                "with a missing phase; %d skipped or repaired entries (import_report.json).", folder, len(train),
                len(test), len(labelled_test), len(missing), len(skipped))
    return ImportResult(full_name, folder, tuple(c.case_id for c in train), tuple(c.case_id for c in test),
                        tuple(skipped), missing)


def _volume(case: CropCase) -> float:
    ref = case.phases[case.reference_phase]
    return float(np.prod(ref.box.size()) * np.prod(ref.grid.spacing))
