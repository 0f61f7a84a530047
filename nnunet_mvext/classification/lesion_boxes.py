"""Lesion boxes instead of masks: ``nnunet-mvext boxes-to-labels`` writes nnU-Net label files from a CSV of boxes.

Public multi-phase datasets often ship a lesion bounding box per case, not a voxel mask (LLD-MMRI 2023). The fusion
trainers then train on a label file whose lesion label is the filled box.

CSV format, one row per box, several boxes per case allowed (columns in any order, each once)::

    case_id,label,x_min,y_min,z_min,x_max,y_max,z_max           # corners
    case_id,label,x_center,y_center,z_center,x_size,y_size,z_size   # or centre + size

``label`` is the integer label value written into the box (a value of ``dataset.json``'s ``labels`` other than
background). Coordinates refer to the reference image ``IMAGES/CASE_{reference_channel}{file_ending}`` (default
channel ``0000``), whose geometry (size, spacing, origin, direction) the label file copies:

- **voxel** (default): ITK index order ``x, y, z`` (the first axis of ``sitk.Image.GetSize()``, as ITK-SNAP and
  3D Slicer show voxel coordinates; numpy's array from ``GetArrayFromImage`` is ``z, y, x``), integers, corners
  inclusive. Centre + size: ``size`` voxels around ``center`` (rounded outward where they do not fall on voxels).
- **world** (``world=True``, ``--world``): physical coordinates in mm in ITK's LPS frame (what
  ``TransformIndexToPhysicalPoint`` and ``GetOrigin`` use; 3D Slicer shows RAS: negate x and y, or pass ``--ras``).
  The eight corners of the box are mapped to continuous indices and the index box that covers them is taken,
  rounding outward (a corner on the border between two voxels includes both), which equals SimpleITK's
  ``TransformPhysicalPointToIndex`` of each corner otherwise.

Everything is validated before any file is written; overlapping boxes are drawn in row order (a later row wins) and
reported when their labels differ. An existing label file is replaced only with ``force`` (a timestamped backup is
kept next to it, :func:`nnunet_mvext.json_files.backup_path`). Cases with images but no box get an all-background
label file only with ``empty_cases``; otherwise they are listed in a warning.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from dataclasses import dataclass
from typing import Optional

import numpy as np
import SimpleITK as sitk

from nnunet_mvext.csv_files import read_csv_rows
from nnunet_mvext.errors import MVExtError
from nnunet_mvext.json_files import backup_path, read_json

logger = logging.getLogger(__name__)

AXES = ("x", "y", "z")
CORNER_COLUMNS = ("case_id", "label", "x_min", "y_min", "z_min", "x_max", "y_max", "z_max")
CENTER_COLUMNS = ("case_id", "label", "x_center", "y_center", "z_center", "x_size", "y_size", "z_size")
_EPS = 1e-6


@dataclass(frozen=True)
class LesionBox:
    """One CSV row: the box as given (corners, in the CSV's coordinates), its label and where it came from."""

    row: int
    case_id: str
    label: int
    minimum: tuple
    maximum: tuple


@dataclass(frozen=True)
class ReferenceGeometry:
    """Size ``(x, y, z)``, spacing, origin and direction (row-major 3x3) of a case's reference image."""

    path: str
    size: tuple
    spacing: tuple
    origin: tuple
    direction: tuple

    @classmethod
    def read(cls, path: str) -> "ReferenceGeometry":
        reader = sitk.ImageFileReader()
        reader.SetFileName(path)
        try:
            reader.ReadImageInformation()
        except RuntimeError as e:
            raise MVExtError(f"Cannot read the reference image {path}: {str(e).strip().splitlines()[-1]}") from None
        if reader.GetDimension() != 3:
            raise MVExtError(f"Reference image {path} has {reader.GetDimension()} dimensions; boxes-to-labels "
                             f"writes 3D labels only.")
        return cls(path, reader.GetSize(), reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())

    def continuous_index(self, point: np.ndarray) -> np.ndarray:
        """``(N, 3)`` physical points (mm, LPS) -> continuous ITK indices: ``(D diag(spacing))^-1 (p - origin)``."""
        matrix = np.array(self.direction, dtype=float).reshape(3, 3) * np.array(self.spacing, dtype=float)
        return np.linalg.solve(matrix, (np.asarray(point, dtype=float) - np.array(self.origin)).T).T


def _number(text: str, path: str, row: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise MVExtError(f"{path}, row {row}: {column} is '{text}', not a number.")
    return value


def read_boxes_csv(path: str) -> tuple[list[LesionBox], bool]:
    """The boxes of ``path`` as corners (centre + size converted), and whether the file used centre + size.

    Corners from centre + size are ``center -/+ (size - 1) / 2`` in voxel mode (``size`` voxels) and
    ``center -/+ size / 2`` in world mode; :func:`index_box` decides which is meant and rounds.
    """
    if not os.path.isfile(path):
        raise MVExtError(f"Boxes file {path} does not exist.")
    rows = read_csv_rows(path)
    if not rows:
        raise MVExtError(f"{path} is empty; expected the header {','.join(CORNER_COLUMNS)} "
                         f"(or {','.join(CENTER_COLUMNS)}).")
    header = [c.strip() for c in rows[0]]
    duplicates = sorted({c for c in header if header.count(c) > 1})
    if duplicates:
        raise MVExtError(f"{path}: header column(s) {', '.join(duplicates)} appear more than once.")
    if set(header) == set(CORNER_COLUMNS):
        centre = False
    elif set(header) == set(CENTER_COLUMNS):
        centre = True
    else:
        raise MVExtError(f"{path}: the header must hold exactly the columns {','.join(CORNER_COLUMNS)} or "
                         f"{','.join(CENTER_COLUMNS)} (any order), got {','.join(header)}.")
    col = {name: i for i, name in enumerate(header)}
    boxes = []
    for number, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise MVExtError(f"{path}, row {number}: expected {len(header)} columns ({','.join(header)}), "
                             f"got {len(row)}: {row}.")
        case_id = row[col["case_id"]].strip()
        if not case_id:
            raise MVExtError(f"{path}, row {number}: case_id is empty.")
        label_text = row[col["label"]].strip()
        try:
            label = int(label_text)
        except ValueError:
            raise MVExtError(f"{path}, row {number} (case {case_id}): label '{label_text}' is not an integer "
                             f"label value.") from None
        if centre:
            c = np.array([_number(row[col[f"{a}_center"]], path, number, f"{a}_center") for a in AXES])
            s = np.array([_number(row[col[f"{a}_size"]], path, number, f"{a}_size") for a in AXES])
            for a, v in zip(AXES, s):
                if v <= 0:
                    raise MVExtError(f"{path}, row {number} (case {case_id}): {a}_size is {v:g}; sizes must be "
                                     f"positive.")
            boxes.append(LesionBox(number, case_id, label, tuple(c), tuple(s)))
        else:
            lo = [_number(row[col[f"{a}_min"]], path, number, f"{a}_min") for a in AXES]
            hi = [_number(row[col[f"{a}_max"]], path, number, f"{a}_max") for a in AXES]
            for a, v0, v1 in zip(AXES, lo, hi):
                if v0 > v1:
                    raise MVExtError(f"{path}, row {number} (case {case_id}): {a}_min {v0:g} > {a}_max {v1:g}; "
                                     f"give the smaller corner as min.")
            boxes.append(LesionBox(number, case_id, label, tuple(lo), tuple(hi)))
    if not boxes:
        raise MVExtError(f"{path} has a header but no box rows.")
    return boxes, centre


def index_box(box: LesionBox, geometry: ReferenceGeometry, centre: bool, world: bool,
              source: str) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive ITK index corners ``(lo, hi)`` of ``box`` on the reference grid; refuses a box outside it."""
    where = f"{source}, row {box.row} (case {box.case_id})"
    if centre:
        c, s = np.array(box.minimum), np.array(box.maximum)
        half = s / 2 if world else (s - 1) / 2
        lo, hi = c - half, c + half
    else:
        lo, hi = np.array(box.minimum, dtype=float), np.array(box.maximum, dtype=float)
    if world:
        corners = np.array([[(lo, hi)[b >> k & 1][k] for k in range(3)] for b in range(8)])
        index = geometry.continuous_index(corners)
        lo, hi = index.min(0), index.max(0)
        # a voxel i covers [i - 0.5, i + 0.5]: take every voxel that holds a corner, both at a tie (outward)
        lo_i, hi_i = np.ceil(lo - 0.5 - _EPS), np.floor(hi + 0.5 + _EPS)
    else:
        if not centre:
            for a, v in zip(AXES * 2, (*lo, *hi)):
                if abs(v - round(v)) > _EPS:
                    raise MVExtError(f"{where}: voxel coordinate {a} = {v:g} is not an integer index; give "
                                     f"integer voxel indices or use --world for millimetres.")
        lo_i, hi_i = np.floor(lo + _EPS), np.ceil(hi - _EPS)
    lo_i, hi_i = lo_i.astype(int), hi_i.astype(int)
    size = np.array(geometry.size)
    if np.any(lo_i < 0) or np.any(hi_i > size - 1):
        bad = [AXES[k] for k in range(3) if lo_i[k] < 0 or hi_i[k] > size[k] - 1]
        raise MVExtError(f"{where}: the box covers voxels {tuple(lo_i.tolist())}..{tuple(hi_i.tolist())} (x, y, z), "
                         f"outside the image along {', '.join(bad)}; {geometry.path} has size "
                         f"{tuple(int(v) for v in size)} (valid indices 0..size-1).")
    return lo_i, hi_i


def _ras_to_lps(box: LesionBox, centre: bool) -> LesionBox:
    """RAS (3D Slicer) to ITK's LPS: x and y change sign (corners swap along them; a size stays)."""
    flip = np.array([-1.0, -1.0, 1.0])
    if centre:
        return LesionBox(box.row, box.case_id, box.label, tuple(np.array(box.minimum) * flip), box.maximum)
    a, b = np.array(box.minimum) * flip, np.array(box.maximum) * flip
    return LesionBox(box.row, box.case_id, box.label, tuple(np.minimum(a, b)), tuple(np.maximum(a, b)))


def _dataset_folder(dataset: str) -> str:
    if os.path.isfile(os.path.join(dataset, "dataset.json")):
        return dataset
    from nnunetv2.paths import nnUNet_raw
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    try:
        name = maybe_convert_to_dataset_name(dataset)
    except RuntimeError as e:
        raise MVExtError(f"Dataset '{dataset}' not found: {e}") from None
    return os.path.join(nnUNet_raw.require(), name)


def boxes_to_labels(dataset: str, boxes_csv: str, output_folder: Optional[str] = None,
                    images_folder: Optional[str] = None, reference_channel: str = "0000", world: bool = False,
                    ras: bool = False, force: bool = False, empty_cases: bool = False) -> list[str]:
    """Write one label file per case from ``boxes_csv``; returns the files written.

    ``dataset``: id, name (``DatasetXXX_Name`` under ``nnUNet_raw``) or the raw dataset folder. ``images_folder``
    (default ``imagesTr``) holds the reference images; ``output_folder`` defaults to ``labelsTr``. ``ras``: world
    coordinates are RAS (3D Slicer), x and y are negated into ITK's LPS.
    """
    if ras and not world:
        raise MVExtError("--ras applies to world coordinates only; add --world.")
    folder = _dataset_folder(dataset)
    dataset_json_path = os.path.join(folder, "dataset.json")
    dataset_json = read_json(dataset_json_path, "dataset.json")
    file_ending = dataset_json.get("file_ending", ".nii.gz")
    allowed = sorted({int(v) for v in dataset_json.get("labels", {}).values()
                      if isinstance(v, int) and not isinstance(v, bool)} - {0})
    label_names = {int(v): k for k, v in dataset_json.get("labels", {}).items() if isinstance(v, int)}
    images = images_folder or os.path.join(folder, "imagesTr")
    output = output_folder or os.path.join(folder, "labelsTr")
    if not os.path.isdir(images):
        raise MVExtError(f"Images folder {images} does not exist.")
    if not (len(reference_channel) == 4 and reference_channel.isdigit()):
        raise MVExtError(f"--reference-channel '{reference_channel}' must be four digits, e.g. 0000.")
    suffix = f"_{reference_channel}{file_ending}"
    known = sorted(f[:-len(suffix)] for f in os.listdir(images) if f.endswith(suffix))

    boxes, centre = read_boxes_csv(boxes_csv)
    geometries: dict[str, ReferenceGeometry] = {}
    drawn: dict[str, list] = {}
    for box in boxes:
        if box.case_id not in known:
            raise MVExtError(f"{boxes_csv}, row {box.row}: case '{box.case_id}' has no reference image "
                             f"{os.path.join(images, box.case_id + suffix)}"
                             f"{' (no case has channel ' + reference_channel + ')' if not known else ''}.")
        if box.label not in allowed:
            raise MVExtError(f"{boxes_csv}, row {box.row} (case {box.case_id}): label {box.label} is not a label "
                             f"of {dataset_json_path}; allowed: "
                             f"{', '.join(f'{v} ({label_names.get(v, v)})' for v in allowed) or 'none'}.")
        if box.case_id not in geometries:
            geometries[box.case_id] = ReferenceGeometry.read(os.path.join(images, box.case_id + suffix))
        if ras:
            box = _ras_to_lps(box, centre)
        lo_i, hi_i = index_box(box, geometries[box.case_id], centre, world, boxes_csv)
        drawn.setdefault(box.case_id, []).append((box, lo_i, hi_i))

    without = [c for c in known if c not in drawn]
    targets = list(drawn) + (without if empty_cases else [])
    paths = {c: os.path.join(output, c + file_ending) for c in targets}
    existing = [p for p in paths.values() if os.path.exists(p)]
    if existing and not force:
        raise MVExtError(f"{len(existing)} label file(s) exist already, e.g. {existing[0]}; refusing to overwrite "
                         f"them. Add --force to replace them (a timestamped backup of each is kept).")
    if without and not empty_cases:
        logger.warning("%d case(s) in %s have no box and get no label file: %s%s. Add --empty-cases to write "
                       "all-background labels for them.", len(without), images, ", ".join(without[:20]),
                       " ..." if len(without) > 20 else "")

    for case_id in targets:
        if case_id not in geometries:
            geometries[case_id] = ReferenceGeometry.read(os.path.join(images, case_id + suffix))

    os.makedirs(output, exist_ok=True)
    written = []
    for case_id in targets:
        geometry = geometries[case_id]
        boxes_of_case = drawn.get(case_id, [])
        dtype = np.uint8 if max([b.label for b, _, _ in boxes_of_case], default=0) < 256 else np.uint16
        array = np.zeros(tuple(reversed(geometry.size)), dtype=dtype)  # numpy order z, y, x
        for box, lo_i, hi_i in boxes_of_case:
            region = tuple(slice(int(lo_i[k]), int(hi_i[k]) + 1) for k in (2, 1, 0))
            others = set(np.unique(array[region]).tolist()) - {0, box.label}
            if others:
                logger.warning("%s, row %d (case %s): the box of label %d overlaps label(s) %s drawn by earlier "
                               "rows; the later row wins.", boxes_csv, box.row, case_id, box.label, sorted(others))
            array[region] = box.label
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(geometry.spacing)
        image.SetOrigin(geometry.origin)
        image.SetDirection(geometry.direction)
        path = paths[case_id]
        if os.path.exists(path):
            backup = backup_path(path)
            shutil.copy2(path, backup)
            logger.info("kept the previous %s as %s", os.path.basename(path), backup)
        sitk.WriteImage(image, path, useCompression=True)
        written.append(path)
    logger.info("wrote %d label file(s) into %s (%d box(es))", len(written), output, len(boxes))
    return written
