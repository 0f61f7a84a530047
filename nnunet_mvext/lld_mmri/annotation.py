"""The LLD-MMRI 2023 release's ``labels/Annotation.json``: read, validated, and its box convention.

Layout of a release::

    RELEASE/images/<patient>/<studyUID>/<seriesUID>.nii.gz      one series per phase, eight per patient
    RELEASE/labels/Annotation.json

``Annotation.json`` holds one entry per series::

    {"Annotation_info": {"<patient>": [
        {"studyUID": "...", "seriesUID": "...", "phase": "C+A", "pixel_spacing": [0.7, 0.7], "slice_thickness": 6,
         "slice_spacing": 7.2, "origin": [-170.1, -190.4, -60.3],
         "annotation": {"lesion": {"0": {"category": 6, "bbox": {"3D_box": {"x_min": 120, "y_min": 98, "z_min": 20,
                                                                            "x_max": 141, "y_max": 117, "z_max": 24}}},
                                   "1": {...}}}},
        ...]}}

**Geometry keys** (optional per series, validated when present): ``pixel_spacing`` (two positive numbers, mm, ITK x
then y), ``slice_spacing`` (a positive number, mm, the distance between slices), ``slice_thickness`` (a positive
number, mm; not the slice distance, used for z only where ``slice_spacing`` is absent, as in copies of the file older
than the organisers' update of 2023-06-05) and ``origin`` (three finite numbers, mm). The release's NIfTI headers
carry no geometry (spacing 1, origin 0): :mod:`~nnunet_mvext.lld_mmri.geometry` builds each series' grid from these
keys.

Phases (:data:`PHASES`, the order of the channels this package writes): ``T2WI``, ``DWI``, ``In Phase``, ``Out Phase``,
``C-pre``, ``C+A``, ``C+V``, ``C+Delay``. Categories (:data:`CLASS_NAMES`, the challenge's names and order): 0
``Hepatic_hemangioma`` .. 6 ``Hepatocellular_carcinoma``; -1 (:data:`UNRELEASED`) means the label is not released.

**Boxes** are voxel indices of their own series, read exactly as the challenge's crop code
(``main/preprocess/crop_roi.py`` of LMMMEng/LLD-MMRI2023) uses them: it slices the numpy array of
``sitk.GetArrayFromImage`` (axes ``z, y, x``; ``x`` is ITK's first index axis, ``GetSize()[0]``) as
``array[z_min:z_max + 1, y_min:y_max, x_min:x_max]``. So ``z_max`` is the last slice of the lesion (inclusive) and
``x_max``, ``y_max`` are one past the last column and row (exclusive): the box covers the ITK indices
``x_min .. x_max - 1``, ``y_min .. y_max - 1``, ``z_min .. z_max`` (:meth:`Box.numpy_slices`,
:meth:`Box.first_voxel`, :meth:`Box.last_voxel`). Coordinates are converted with ``int()``, as that code does.

Refused outright (:class:`~nnunet_mvext.errors.MVExtError`, naming patient, series and key): no ``Annotation.json``,
invalid JSON, a patient listed twice (valid JSON, but the first listing would be silently lost), a structure other
than the one above, an unknown phase name, a category outside -1..6, a coordinate that is not a number, a geometry key
of the wrong type, length or sign. A box that does not fit its image (beyond the slice count, empty) is not an error
of the file: :meth:`Box.problem` names it and the import skips or repairs it (see
:mod:`~nnunet_mvext.lld_mmri.import_release`).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass
from typing import Optional, Sequence

from nnunet_mvext.errors import MVExtError

PHASES = ("T2WI", "DWI", "In Phase", "Out Phase", "C-pre", "C+A", "C+V", "C+Delay")
CLASS_NAMES = ("Hepatic_hemangioma", "Intrahepatic_cholangiocarcinoma", "Hepatic_abscess", "Hepatic_metastasis",
               "Hepatic_cyst", "FOCAL_NODULAR_HYPERPLASIA", "Hepatocellular_carcinoma")
UNRELEASED = -1
ANNOTATION_FILE = os.path.join("labels", "Annotation.json")
BOX_KEYS = ("x_min", "y_min", "z_min", "x_max", "y_max", "z_max")


@dataclass(frozen=True)
class Box:
    """A lesion box in the challenge's convention (module docstring): x, y max exclusive, z max inclusive."""

    x_min: int
    y_min: int
    z_min: int
    x_max: int
    y_max: int
    z_max: int

    def numpy_slices(self) -> tuple[slice, slice, slice]:
        """The challenge's crop of ``sitk.GetArrayFromImage(image)`` (axes z, y, x)."""
        return slice(self.z_min, self.z_max + 1), slice(self.y_min, self.y_max), slice(self.x_min, self.x_max)

    def first_voxel(self) -> tuple[int, int, int]:
        """ITK index ``(x, y, z)`` of the box's first voxel."""
        return self.x_min, self.y_min, self.z_min

    def last_voxel(self) -> tuple[int, int, int]:
        """ITK index ``(x, y, z)`` of the box's last voxel (inclusive)."""
        return self.x_max - 1, self.y_max - 1, self.z_max

    def size(self) -> tuple[int, int, int]:
        """Voxels along ``x, y, z``."""
        return self.x_max - self.x_min, self.y_max - self.y_min, self.z_max - self.z_min + 1

    def centre_index(self) -> tuple[float, float, float]:
        """Continuous ITK index ``(x, y, z)`` of the box's centre: the mean of its first and last voxel."""
        return tuple((a + b) / 2 for a, b in zip(self.first_voxel(), self.last_voxel()))

    def problem(self, image_size: Sequence[int]) -> Optional[str]:
        """Why the box does not fit an image of ITK size ``(x, y, z)``, or None when it does."""
        if min(self.size()) <= 0:
            return (f"empty box (x {self.x_min}..{self.x_max} and y {self.y_min}..{self.y_max} exclusive of max, "
                    f"z {self.z_min}..{self.z_max} inclusive)")
        if self.z_min < 0 or self.z_max >= image_size[2]:
            return f"box slices z {self.z_min}..{self.z_max} beyond the series' {image_size[2]} slices"
        for axis, lo, hi, n in (("x", self.x_min, self.x_max, image_size[0]), ("y", self.y_min, self.y_max,
                                                                               image_size[1])):
            if lo < 0 or hi > n:
                return f"box {axis} {lo}..{hi} (max exclusive) beyond the series' {n} voxels along {axis}"
        return None

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in BOX_KEYS}


@dataclass(frozen=True)
class Lesion:
    """One lesion of one series: its index (the JSON key), category and box."""

    index: str
    category: int
    box: Box


@dataclass(frozen=True)
class SeriesEntry:
    """One entry of ``Annotation_info[patient]``: a series (one phase) and its lesions."""

    patient: str
    study_uid: str
    series_uid: str
    phase: str
    lesions: tuple
    pixel_spacing: Optional[tuple] = None  # (x, y) mm
    slice_spacing: Optional[float] = None  # mm between slices
    slice_thickness: Optional[float] = None  # mm
    origin: Optional[tuple] = None  # (x, y, z) mm

    def image_path(self, release_dir: str) -> str:
        return self.image_in(os.path.join(release_dir, "images"))

    def image_in(self, images_dir: str) -> str:
        """The series file in a folder of ``<patient>/<studyUID>/<seriesUID>.nii.gz`` (``images/`` of a release,
        or the test set's images folder)."""
        return os.path.join(images_dir, self.patient, self.study_uid, self.series_uid + ".nii.gz")

    def mask_path(self, release_dir: str) -> str:
        """Where a release with lesion masks would keep this series' mask (the image layout under ``labels/``)."""
        return os.path.join(release_dir, "labels", self.patient, self.study_uid, self.series_uid + ".nii.gz")

    def lesion(self, index: str) -> Optional[Lesion]:
        return next((les for les in self.lesions if les.index == index), None)


def _coordinate(value, where: str, key: str) -> int:
    """``int(value)`` as the challenge's crop code converts a coordinate; refuses what it could not convert."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise MVExtError(f"{where}: '{key}' is {value!r}; allowed: an integer voxel index.")
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise MVExtError(f"{where}: '{key}' is {value!r}; allowed: an integer voxel index.") from None


def _category(value, where: str) -> int:
    allowed = f"-1 (not released) or 0..{len(CLASS_NAMES) - 1} ({', '.join(CLASS_NAMES)})"
    if isinstance(value, bool):
        raise MVExtError(f"{where}: 'category' is {value!r}; allowed: {allowed}.")
    try:
        category = int(value)
    except (TypeError, ValueError):
        raise MVExtError(f"{where}: 'category' is {value!r}; allowed: {allowed}.") from None
    if category != value and str(category) != str(value).strip():
        raise MVExtError(f"{where}: 'category' is {value!r}; allowed: {allowed}.")
    if not UNRELEASED <= category < len(CLASS_NAMES):
        raise MVExtError(f"{where}: 'category' is {category}; allowed: {allowed}.")
    return category


def _short(value, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (an error names a value, it does not print a whole file)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def _require(mapping, key: str, kind, where: str):
    if not isinstance(mapping, dict) or key not in mapping:
        raise MVExtError(f"{where}: key '{key}' is missing.")
    value = mapping[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise MVExtError(f"{where}: '{key}' is {type(value).__name__} {_short(value)}; expected {names}.")
    return value


def _number(value) -> Optional[float]:
    """``value`` as a finite float, or None when it is not a finite number (booleans are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _geometry(item: dict, where: str) -> dict:
    """The geometry keys of one series entry (module docstring), validated; absent keys are None."""
    out = {}
    for key, length, positive in (("pixel_spacing", 2, True), ("origin", 3, False)):
        value = item.get(key)
        if value is None:
            out[key] = None
            continue
        numbers = [_number(v) for v in value] if isinstance(value, list) else []
        if len(numbers) != length or any(v is None or (positive and v <= 0) for v in numbers):
            what = "positive numbers" if positive else "finite numbers"
            raise MVExtError(f"{where}: '{key}' is {_short(value)}; allowed: a list of {length} {what} (mm).")
        out[key] = tuple(numbers)
    for key in ("slice_spacing", "slice_thickness"):
        value = item.get(key)
        if value is None:
            out[key] = None
            continue
        number = _number(value)
        if number is None or number <= 0:
            raise MVExtError(f"{where}: '{key}' is {_short(value)}; allowed: a positive number (mm).")
        out[key] = number
    return out


def _series_entry(patient: str, position: int, item, source: str) -> SeriesEntry:
    where = f"{source}, patient {patient}, entry {position}"
    if not isinstance(item, dict):
        raise MVExtError(f"{where}: expected an object with studyUID, seriesUID, phase and annotation, got "
                         f"{type(item).__name__}.")
    study = str(_require(item, "studyUID", (str, int), where))
    series = str(_require(item, "seriesUID", (str, int), where))
    where = f"{source}, patient {patient}, series {series}"
    phase = _require(item, "phase", str, where)
    if phase not in PHASES:
        raise MVExtError(f"{where}: unknown phase '{phase}'; allowed: {', '.join(repr(p) for p in PHASES)}.")
    annotation = _require(item, "annotation", dict, where)
    lesions_json = _require(annotation, "lesion", dict, f"{where}, 'annotation'")
    lesions = []
    for index, lesion_json in lesions_json.items():
        at = f"{where} ({phase}), lesion {index}"
        if not isinstance(lesion_json, dict):
            raise MVExtError(f"{at}: expected an object with 'category' and 'bbox', got {type(lesion_json).__name__}.")
        if "category" not in lesion_json:
            raise MVExtError(f"{at}: key 'category' is missing.")
        category = _category(lesion_json["category"], at)
        bbox = _require(_require(lesion_json, "bbox", dict, at), "3D_box", dict, f"{at}, 'bbox'")
        coords = {}
        for key in BOX_KEYS:
            if key not in bbox:
                raise MVExtError(f"{at}, 'bbox' '3D_box': key '{key}' is missing (a box has {', '.join(BOX_KEYS)}).")
            coords[key] = _coordinate(bbox[key], f"{at}, 'bbox' '3D_box'", key)
        lesions.append(Lesion(str(index), category, Box(**coords)))
    return SeriesEntry(patient, study, series, phase, tuple(lesions), **_geometry(item, f"{where} ({phase})"))


class _DuplicateKey(Exception):
    def __init__(self, key: str):
        self.key = key


def _unique_keys(pairs: list) -> dict:
    """``object_pairs_hook`` of :func:`json.loads` that refuses a key given twice in one object (plain ``json``
    keeps the last silently)."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def load_annotation_json(path: str, what: str = "Annotation file"):
    """The parsed content of an annotation file; refuses invalid JSON (line and column) and a key given twice in one
    object (a patient listed twice would lose its first listing's series), naming the file and the key."""
    if not os.path.isfile(path):
        raise MVExtError(f"{what} {path} does not exist.")
    with open(path, encoding="utf-8-sig") as f:
        text = f.read()
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as e:
        raise MVExtError(f"{what} {path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}.") from None
    except _DuplicateKey as e:
        raise MVExtError(f"{what} {path}: key '{e.key}' appears twice in one object (e.g. a patient listed twice in "
                         f"'Annotation_info'); JSON readers keep only the last. Merge the listings into one.") from None


def read_annotation(release_dir: str, path: Optional[str] = None) -> dict[str, list[SeriesEntry]]:
    """``{patient: [series entries in file order]}`` of ``RELEASE/labels/Annotation.json`` (or of ``path``, e.g. the
    test set's ``Annotation_test.json``), validated (module docstring); refuses a release without the file, naming
    where it was looked for."""
    if not os.path.isdir(release_dir):
        raise MVExtError(f"Release folder {release_dir} does not exist.")
    if path is None:
        path = os.path.join(release_dir, ANNOTATION_FILE)
        if not os.path.isfile(path):
            raise MVExtError(f"{path} does not exist; a release of LLD-MMRI 2023 holds images/<patient>/<studyUID>/"
                             f"<seriesUID>.nii.gz and labels/Annotation.json. Give the folder that holds both.")
    content = load_annotation_json(path)
    info = _require(content, "Annotation_info", dict, path)
    if not info:
        raise MVExtError(f"{path}: 'Annotation_info' holds no patient.")
    patients = {}
    for patient, items in info.items():
        if not isinstance(items, list) or not items:
            raise MVExtError(f"{path}, patient {patient}: expected a non-empty list of series entries, got "
                             f"{_short(items)}.")
        patients[str(patient)] = [_series_entry(str(patient), i, item, path) for i, item in enumerate(items)]
    return patients


def majority(values: Sequence[int]) -> int:
    """The most common value; a tie goes to the tied value that comes first in ``values``."""
    counts = Counter(values)
    top = max(counts.values())
    return next(v for v in values if counts[v] == top)


def majority_category(categories: dict[str, int], reference_phase: str) -> int:
    """The category most series of a lesion give it (``{phase: category}``); a tie goes to the reference phase's
    category when it is among the tied, else to the first tied one in :data:`PHASES` order."""
    order = [reference_phase] + [p for p in PHASES if p != reference_phase]
    return majority([categories[p] for p in order if p in categories])
