"""The organisers' five folds of LLD-MMRI 2023 (``classification_dataset/labels/``) as nnU-Net's splits.

Files (one ``"<name> <class>"`` per line, ``<name>`` a crop folder of
:mod:`~nnunet_mvext.lld_mmri.official_crops`: ``<patient>`` for lesion 0, ``<patient>_<idx>`` for lesion ``idx``):
``labels.txt`` (every labelled crop case), ``labels_val_inaccessible.txt`` (the category -1 ones, ``-1``),
``train_fold1.txt`` .. ``train_fold5.txt`` and ``val_fold1.txt`` .. ``val_fold5.txt``.

**Writing** (:func:`write_fold_files`, for the mock): ``main/preprocess/gene_cross_val.py`` of LMMMEng/LLD-MMRI2023
exactly: ``random.seed(66)``; per class 0..6 in that order, the class's names in ``labels.txt`` order shuffled with
``random.shuffle`` and cut into 5 consecutive parts (the first ``n mod 5`` parts one longer); fold ``i`` validates on
part ``i`` of every class and trains on the others (written class by class, parts in order).

**Reading** (:func:`official_splits`): given an import's ``{case_id: patient}`` (crop: ``<patient>_<lesion>``;
resample: ``<patient>``), ``train_foldK``/``val_foldK`` become nnU-Net's fold ``K - 1``. A fold-file name is the
patient when it is one, else ``<patient>_<idx>`` split at its last ``_`` (patient ids may hold ``-`` and ``_``).
**A patient's cases follow the patient**: gene_cross_val.py splits crop cases, so the lesions of one patient can land
in different folds; a patient validates in the fold of its first listed lesion (lowest index), is left out of that
fold's training, and is reported. Reported (:class:`FoldReport`), never silently dropped: labelled patients of the
import in no fold file (``unlisted``: put in every fold's training by default, ``unlisted="exclude"`` leaves them
out), names of the fold files the import has no case for (skipped patients), fold-file classes that disagree with the
import's (the JSON's) or with ``labels.txt``, patients in several validation folds.

Refused (:class:`~nnunet_mvext.errors.MVExtError`, naming file and line): a line that is not ``<name> <integer
class>``, a class outside -1..6, a name listed twice in one file, a ``train_foldK`` without its ``val_foldK`` (or the
reverse), fold numbers that are not ``1..K``.
"""

from __future__ import annotations

import copy
import itertools
import os
import random
import re
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

from nnunet_mvext.errors import MVExtError
from nnunet_mvext.lld_mmri.annotation import CLASS_NAMES, UNRELEASED

LABELS_DIR = os.path.join("classification_dataset", "labels")
LABELS_TXT = "labels.txt"
INACCESSIBLE_TXT = "labels_val_inaccessible.txt"
SEED = 66
NUM_FOLDS = 5
UNLISTED = ("train", "exclude")


def _split_list(my_list: list, num_parts: int) -> list[list]:
    """gene_cross_val.py's ``split_list``: consecutive parts, the first ``len % num_parts`` one longer."""
    part_size, remainder = divmod(len(my_list), num_parts)
    result, start = [], 0
    for i in range(num_parts):
        end = start + part_size + (1 if i < remainder else 0)
        result.append(my_list[start:end])
        start = end
    return result


def cross_val_folds(labels: Sequence[tuple[str, int]], num_folds: int = NUM_FOLDS,
                    num_classes: int = len(CLASS_NAMES), seed: int = SEED) -> list[tuple[list, list]]:
    """gene_cross_val.py's ``build_dataset`` (module docstring) on ``[(name, class)]`` in labels.txt order:
    ``[(train [(name, class)], val [(name, class)])]`` per fold, in the order it writes them. Uses its own
    ``random.Random(seed)``, the stream ``random.seed(seed)`` gives, without touching the global one."""
    rng = random.Random(seed)
    n_fold_list = []
    for cls_idx in range(num_classes):
        data_list = [name for name, cls in labels if int(cls) == cls_idx]
        rng.shuffle(data_list)
        n_fold_list.append(_split_list([(name, cls_idx) for name in data_list], num_folds))
    folds = []
    for i in range(num_folds):
        train_data, val_data = [], []
        parts = copy.deepcopy(n_fold_list)
        for j in range(num_classes):
            val_data.append(parts[j][i])
            del parts[j][i]
            train_data.extend(parts[j])
        folds.append((list(itertools.chain(*train_data)), list(itertools.chain(*val_data))))
    return folds


def write_fold_files(labels: Sequence[tuple[str, int]], save_dir: str, num_folds: int = NUM_FOLDS,
                     seed: int = SEED) -> list[str]:
    """Write ``train_fold{i}.txt`` / ``val_fold{i}.txt`` (``i = 1..num_folds``) as gene_cross_val.py does; returns
    the paths."""
    os.makedirs(save_dir, exist_ok=True)
    paths = []
    for i, (train, val) in enumerate(cross_val_folds(labels, num_folds, seed=seed), start=1):
        for kind, rows in (("train", train), ("val", val)):
            path = os.path.join(save_dir, f"{kind}_fold{i}.txt")
            with open(path, "w") as f:
                f.writelines(f"{name} {cls}\n" for name, cls in rows)
            paths.append(path)
    return paths


def read_label_file(path: str) -> list[tuple[str, int, int]]:
    """``[(name, class, line number)]`` of a ``"<name> <class>"`` file; refuses a malformed line or a name listed
    twice, naming file and line."""
    from nnunet_mvext.csv_files import decode_text

    rows, seen = [], {}
    with open(path, "rb") as f:
        text = decode_text(f.read(), path)
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not re.fullmatch(r"-?\d+", parts[1]):
            raise MVExtError(f"{path}, line {number}: {line.strip()!r:.80}; expected '<case> <class>' (a crop "
                             f"folder name and an integer class, separated by a space).")
        cls = int(parts[1])
        if not UNRELEASED <= cls < len(CLASS_NAMES):
            raise MVExtError(f"{path}, line {number}: class {cls}; allowed: -1 (not released) or "
                             f"0..{len(CLASS_NAMES) - 1}.")
        if parts[0] in seen:
            raise MVExtError(f"{path}, line {number}: '{parts[0]}' is listed again (first on line "
                             f"{seen[parts[0]]}).")
        seen[parts[0]] = number
        rows.append((parts[0], cls, number))
    return rows


def fold_files(labels_dir: str) -> dict[int, tuple[str, str]]:
    """``{K: (train_foldK path, val_foldK path)}`` of ``labels_dir``; empty when it holds none. Refuses a half pair
    and numbers other than ``1..K``."""
    if not os.path.isdir(labels_dir):
        return {}
    found: dict[int, dict[str, str]] = {}
    for name in sorted(os.listdir(labels_dir)):
        m = re.fullmatch(r"(train|val)_fold(\d+)\.txt", name)
        if m:
            found.setdefault(int(m.group(2)), {})[m.group(1)] = os.path.join(labels_dir, name)
    for k, pair in found.items():
        if len(pair) != 2:
            have, lack = next(iter(pair)), "val" if "train" in pair else "train"
            raise MVExtError(f"{pair[have]} has no {lack}_fold{k}.txt beside it in {labels_dir}; a fold needs both.")
    if found and sorted(found) != list(range(1, len(found) + 1)):
        raise MVExtError(f"{labels_dir}: fold files numbered {sorted(found)}; expected train_fold1..train_fold"
                         f"{len(found)} (and val_fold1..), as gene_cross_val.py writes them.")
    return {k: (found[k]["train"], found[k]["val"]) for k in sorted(found)}


def name_to_lesion(name: str, patients: set) -> Optional[tuple[str, str]]:
    """``(patient, lesion index)`` of a crop folder name: the patient itself (lesion ``0``) when ``name`` is one of
    ``patients``, else ``<patient>_<idx>`` split at the last ``_``; None when neither names a known patient."""
    if name in patients:
        return name, "0"
    m = re.fullmatch(r"(.+)_(\d+)", name)
    if m and m.group(1) in patients:
        return m.group(1), str(int(m.group(2)))
    return None


@dataclass
class FoldReport:
    """What :func:`official_splits` found besides the splits (module docstring)."""

    fold_files: list = field(default_factory=list)
    unlisted_labelled_patients: list = field(default_factory=list)
    unlisted_placement: str = "train"
    names_not_imported: list = field(default_factory=list)
    class_disagreements: list = field(default_factory=list)
    patients_in_several_val_folds: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def messages(self) -> list[str]:
        out = []
        if self.unlisted_labelled_patients:
            where = "in every fold's training" if self.unlisted_placement == "train" else "in no fold"
            out.append(f"{len(self.unlisted_labelled_patients)} labelled patient(s) in no fold file ({where}): "
                       f"{', '.join(self.unlisted_labelled_patients[:10])}")
        if self.names_not_imported:
            out.append(f"{len(self.names_not_imported)} fold-file name(s) without an imported case: "
                       + ", ".join(f"{d['name']} ({d['file']}:{d['line']})" for d in self.names_not_imported[:10]))
        for d in self.class_disagreements:
            out.append(f"{d['file']}, line {d['line']}: {d['name']} class {d['fold_class']}, {d['against']} says "
                       f"{d['other_class']}")
        for d in self.patients_in_several_val_folds:
            out.append(f"patient {d['patient']} is in the validation of folds {d['folds']} (its lesions were split); "
                       f"it validates in fold {d['used']} only")
        return out


def official_splits(labels_dir: str, cases: Mapping[str, str], classes: Optional[Mapping[str, int]] = None,
                    unlisted: str = "train") -> tuple[list[dict], FoldReport]:
    """nnU-Net's split list (``[{"train": [...], "val": [...]}]``, fold ``K - 1`` from ``*_foldK.txt``) and the
    report, for the training cases ``cases`` (``{case_id: patient}``) with their classes ``classes``
    (``{case_id: class}``, the import's). Module docstring for the rules."""
    if unlisted not in UNLISTED:
        raise MVExtError(f"unlisted='{unlisted}'; allowed: {', '.join(UNLISTED)}.")
    pairs = fold_files(labels_dir)
    if not pairs:
        raise MVExtError(f"{labels_dir} holds no train_fold*.txt / val_fold*.txt.")
    by_patient: dict[str, list[str]] = {}
    for case, patient in sorted(cases.items()):
        by_patient.setdefault(patient, []).append(case)
    classes = dict(classes or {})
    labels_txt = os.path.join(labels_dir, LABELS_TXT)
    listed_classes = {n: (c, i) for n, c, i in read_label_file(labels_txt)} if os.path.isfile(labels_txt) else {}
    report = FoldReport(fold_files=[p for pair in pairs.values() for p in pair], unlisted_placement=unlisted)
    known = set(by_patient)
    patient_of_name = {}
    val_folds: dict[str, list[tuple[str, int]]] = {}  # patient -> [(lesion, K)]
    train_of: dict[int, set] = {}
    not_imported = set()
    for k, (train_path, val_path) in pairs.items():
        train_of[k] = set()
        for path, kind in ((train_path, "train"), (val_path, "val")):
            for name, cls, line in read_label_file(path):
                found = name_to_lesion(name, known)
                if found is None:
                    if name not in not_imported:
                        report.names_not_imported.append({"name": name, "file": path, "line": line})
                        not_imported.add(name)
                    continue
                patient, lesion = found
                patient_of_name[name] = patient
                case = f"{patient}_{lesion}" if f"{patient}_{lesion}" in cases else patient
                for against, other in (("the import (Annotation.json)", classes.get(case)),
                                       (LABELS_TXT, listed_classes.get(name, (None,))[0])):
                    if other is not None and other != cls and not any(
                            d["name"] == name and d["against"] == against and d["fold_class"] == cls
                            for d in report.class_disagreements):
                        report.class_disagreements.append({"name": name, "file": path, "line": line,
                                                           "fold_class": cls, "against": against,
                                                           "other_class": int(other)})
                if kind == "val":
                    val_folds.setdefault(patient, []).append((lesion, k))
                else:
                    train_of[k].add(patient)
    val_of: dict[str, int] = {}
    for patient, entries in val_folds.items():
        entries.sort(key=lambda e: (int(e[0]), e[1]))
        val_of[patient] = entries[0][1]
        folds = sorted({k for _, k in entries})
        if len(folds) > 1:
            report.patients_in_several_val_folds.append({"patient": patient, "folds": [k - 1 for k in folds],
                                                         "used": entries[0][1] - 1})
    listed = set(patient_of_name.values())
    report.unlisted_labelled_patients = sorted(p for p in by_patient if p not in listed)
    extra = set(report.unlisted_labelled_patients) if unlisted == "train" else set()
    splits = []
    for k in pairs:
        val = {p for p, v in val_of.items() if v == k}
        train = (train_of[k] | extra | {p for p, v in val_of.items() if v != k}) - val
        splits.append({"train": sorted(c for p in train for c in by_patient[p]),
                       "val": sorted(c for p in val for c in by_patient[p])})
    return splits, report


SPLITS_FILE = "splits_final.json"


def plan_official_splits(release_dir: str, cases: Mapping[str, str], classes: Optional[Mapping[str, int]] = None,
                         unlisted: str = "train") -> Optional[tuple[list, dict]]:
    """``(splits, report)`` of the organisers' fold files of ``release_dir`` (:func:`official_splits`), read and
    validated before an import writes anything; None when the release has no fold files."""
    labels_dir = os.path.join(release_dir, LABELS_DIR)
    if not fold_files(labels_dir):
        return None
    splits, report = official_splits(labels_dir, cases, classes, unlisted)
    return splits, {"folds": len(splits), **report.as_dict(), "messages": report.messages()}


def write_splits(dataset_folder: str, planned: tuple[list, dict]) -> dict:
    """Write planned splits to the raw dataset's ``splits_final.json`` (nnU-Net copies it to the preprocessed folder
    at planning; ``make-splits --force`` replaces both); returns the report with ``splits_file``."""
    import json

    splits, report = planned
    path = os.path.join(dataset_folder, SPLITS_FILE)
    with open(path, "w") as f:
        json.dump(splits, f, indent=1)
    return {"splits_file": path, **report}


def write_official_splits(release_dir: str, dataset_folder: str, cases: Mapping[str, str],
                          classes: Optional[Mapping[str, int]] = None, unlisted: str = "train") -> Optional[dict]:
    """:func:`plan_official_splits` and :func:`write_splits` in one step; None when there are no fold files."""
    planned = plan_official_splits(release_dir, cases, classes, unlisted)
    return None if planned is None else write_splits(dataset_folder, planned)
