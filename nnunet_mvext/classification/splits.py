"""``nnunet-mvext make-splits``: nnU-Net's ``splits_final.json``, stratified by case class and grouped by patient.

nnU-Net draws its five folds at random (``KFold`` on the case ids): a small fold can miss a class, and two scans of
one patient can land in training and validation. This writes
``nnUNet_preprocessed/<Dataset>/splits_final.json`` (``[{"train": [...], "val": [...]}, ...]``, which nnU-Net then
uses as is) with scikit-learn's ``StratifiedGroupKFold``: every case of a group (patient) in one fold, class
proportions as even across folds as the groups allow.

Classes come from the raw ``dataset.json`` ``classification`` block (``nnunet-mvext set-classes``); groups from an
optional CSV with header ``case_id,group`` that must name every training case (without it, each case is its own
group). An existing file is replaced only with ``--force``, which keeps a timestamped backup and warns, naming them,
when folds were already trained on the old splits.

**Raw splits.** nnU-Net 2.8's planner (``ExperimentPlanner.__init__``, ``_maybe_copy_splits_file``) copies a
``nnUNet_raw/<Dataset>/splits_final.json`` to the preprocessed folder when none is there and otherwise asserts that
every fold of the raw file equals the preprocessed one (a bare ``AssertionError``). So where a raw file exists (e.g.
the official LLD-MMRI folds written by ``import-lld``), ``make-splits`` refuses without ``--force`` and with it
replaces **both** files with the same folds (a backup of each); :func:`check_raw_splits`, called by ``nnunet-mvext
plan`` before any work, refuses a raw and a preprocessed file that nnU-Net would find different, naming both.
"""

from __future__ import annotations

import glob
import logging
import os
import warnings
from typing import Optional, Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from nnunet_mvext.classification.case_labels import class_names as block_class_names
from nnunet_mvext.classification.case_labels import require_labels, training_case_ids
from nnunet_mvext.csv_files import read_csv_rows
from nnunet_mvext.errors import MVExtError
from nnunet_mvext.json_files import read_json, write_json_with_backup

logger = logging.getLogger(__name__)


def read_groups_csv(path: str, cases: list[str]) -> dict[str, str]:
    """``{case_id: group}`` from a ``case_id,group`` CSV; refuses duplicates, unknown and missing cases by name."""
    if not os.path.isfile(path):
        raise MVExtError(f"Groups file {path} does not exist.")
    rows = read_csv_rows(path)
    if not rows or [c.strip() for c in rows[0]] != ["case_id", "group"]:
        raise MVExtError(f"{path}: the first row must be the header 'case_id,group', got {rows[0] if rows else []}.")
    known, groups = set(cases), {}
    for number, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise MVExtError(f"{path}, row {number}: expected 'case_id,group' with both filled, got {row}.")
        case, group = row[0].strip(), row[1].strip()
        if case in groups:
            raise MVExtError(f"{path}, row {number}: duplicate case id '{case}'.")
        if case not in known:
            raise MVExtError(f"{path}, row {number}: case '{case}' is not a training case of the dataset.")
        groups[case] = group
    missing = [c for c in cases if c not in groups]
    if missing:
        raise MVExtError(f"{path} has no group for {len(missing)} training case(s): {', '.join(missing[:20])}"
                         f"{' ...' if len(missing) > 20 else ''}. Every case needs a group (its patient id).")
    return groups


def check_fold_number(n_folds: int) -> None:
    """``--folds`` must give a cross-validation: at least 2 folds."""
    if n_folds < 2:
        raise MVExtError(f"--folds {n_folds}: a cross-validation needs at least 2 folds (nnU-Net's default is 5). To "
                         f"train one model on every case, train nnU-Net's fold 'all' (nnUNetv2_train D C all), which "
                         f"needs no splits.")


def check_class_counts(labels: dict[str, int], groups: dict[str, str], n_folds: int,
                       class_names: Sequence[str]) -> None:
    """Before scikit-learn runs, by class name: refuse ``n_folds`` when every class has fewer cases than folds
    (``StratifiedGroupKFold`` cannot split that); warn when some class has fewer groups (patients) than folds (some
    validation folds then lack it). Both name the classes, their counts and the largest fold count possible."""
    present = sorted(set(labels.values()))
    cases = {c: sum(1 for v in labels.values() if v == c) for c in present}
    group_counts = {c: len({groups[k] for k, v in labels.items() if v == c}) for c in present}
    unit = "cases" if len(set(groups.values())) == len(groups) else "patients (groups)"
    every_class = max(1, min(group_counts.values()))
    hint = (f"with --folds {every_class} or fewer every validation fold holds every class" if every_class >= 2 else
            f"class {', '.join(class_names[c] for c in present if group_counts[c] < 2)} has a single "
            f"{unit[:-1] if unit == 'cases' else 'patient'}, so no fold count puts it in every validation fold")
    if all(cases[c] < n_folds for c in present):
        largest = min(max(cases.values()), len(set(groups.values())))
        raise MVExtError(f"--folds {n_folds}: every class has fewer than {n_folds} cases ("
                         + ", ".join(f"{class_names[c]}: {cases[c]}" for c in present)
                         + f"); a stratified split needs at least one class with as many cases as folds. The largest "
                           f"fold count possible is {largest}; {hint}.")
    short = [c for c in present if group_counts[c] < n_folds]
    if short:
        logger.warning("WARNING: --folds %d: %s %s fewer %s than folds (%s), so some validation folds will lack "
                       "%s; %s.", n_folds, "class" if len(short) == 1 else "classes",
                       ", ".join(class_names[c] for c in short) + (" has" if len(short) == 1 else " have"), unit,
                       ", ".join(f"{class_names[c]}: {group_counts[c]}" for c in short),
                       "it" if len(short) == 1 else "them", hint)


def stratified_group_splits(cases: list[str], labels: dict[str, int], groups: dict[str, str], n_folds: int,
                            seed: int, class_names: Optional[Sequence[str]] = None) -> list[dict]:
    """nnU-Net's split list from ``StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed)``, after
    :func:`check_fold_number` and :func:`check_class_counts` (whose warning replaces scikit-learn's)."""
    check_fold_number(n_folds)
    n_groups = len(set(groups.values()))
    if n_groups < n_folds:
        raise MVExtError(f"{n_folds} folds need at least {n_folds} groups; the dataset has {n_groups}"
                         f"{' (patients)' if n_groups != len(cases) else ' cases'}.")
    names = list(class_names) if class_names else [str(i) for i in range(max(labels.values()) + 1)]
    check_class_counts({c: labels[c] for c in cases}, groups, n_folds, names)
    y = np.array([labels[c] for c in cases])
    g = np.array([groups[c] for c in cases])
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    splits = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class in y", category=UserWarning)
        for train, val in splitter.split(np.zeros(len(cases)), y, g):
            splits.append({"train": sorted(cases[i] for i in train), "val": sorted(cases[i] for i in val)})
    return splits


def trained_fold_folders(dataset_name: str) -> list[str]:
    """Every ``nnUNet_results/<Dataset>/*/fold_X`` folder (trained on the current splits)."""
    from nnunetv2.paths import nnUNet_results

    if not nnUNet_results.is_set():
        return []
    pattern = os.path.join(str(nnUNet_results), dataset_name, "*", "fold_*")
    return sorted(p for p in glob.glob(pattern) if os.path.isdir(p) and not p.endswith("fold_all"))


SPLITS_FILE = "splits_final.json"


def splits_disagreement(raw_splits: list, preprocessed_splits: list) -> Optional[str]:
    """Why nnU-Net's ``_maybe_copy_splits_file`` would stop on these two split lists (every fold of the raw list
    must have the same train and val sets in the preprocessed one), or None."""
    for i, fold in enumerate(raw_splits):
        if i >= len(preprocessed_splits):
            return f"the raw file has {len(raw_splits)} folds, the preprocessed one {len(preprocessed_splits)}"
        for key in ("train", "val"):
            a, b = set(fold[key]), set(preprocessed_splits[i][key])
            if a != b:
                return (f"fold {i} {key} differs ({len(a - b)} case(s) only in the raw file, e.g. "
                        f"{', '.join(sorted(a - b)[:3]) or '-'}; {len(b - a)} only in the preprocessed one, e.g. "
                        f"{', '.join(sorted(b - a)[:3]) or '-'})")
    return None


def check_raw_splits(dataset_name: str) -> None:
    """Refuse (before planning) a raw ``splits_final.json`` that nnU-Net's planner would assert against the
    preprocessed one (module docstring), naming both files and the fix."""
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw

    if not (nnUNet_raw.is_set() and nnUNet_preprocessed.is_set()):
        return
    raw_file = os.path.join(str(nnUNet_raw), dataset_name, SPLITS_FILE)
    pre_file = os.path.join(str(nnUNet_preprocessed), dataset_name, SPLITS_FILE)
    if not (os.path.isfile(raw_file) and os.path.isfile(pre_file)):
        return
    why = splits_disagreement(read_json(raw_file, "raw splits_final.json"), read_json(pre_file, "splits_final.json"))
    if why:
        raise MVExtError(f"{raw_file} and {pre_file} hold different folds ({why}); nnU-Net's planner copies the raw "
                         f"file and stops with an AssertionError when they differ. Fix: run 'nnunet-mvext make-splits "
                         f"{dataset_name} --force ...' again (it writes both), or remove the one you do not want "
                         f"(nnU-Net copies the raw one where the preprocessed one is missing).")


def make_splits(dataset: str, groups_csv: Optional[str] = None, n_folds: int = 5, seed: int = 0,
                force: bool = False) -> str:
    """Write ``splits_final.json``; returns its path. Warns when a fold lacks a class the data hold."""
    check_fold_number(n_folds)
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    for var in (nnUNet_raw, nnUNet_preprocessed):
        if not var.is_set():
            raise MVExtError(f"{var.env_var_name} is not set.")
    try:
        name = maybe_convert_to_dataset_name(dataset)
    except RuntimeError as e:
        raise MVExtError(f"Dataset '{dataset}' not found: {e}") from None
    raw_json_path = os.path.join(str(nnUNet_raw), name, "dataset.json")
    dataset_json = read_json(raw_json_path, "dataset.json")
    class_names = block_class_names(dataset_json, raw_json_path)
    cases = sorted(training_case_ids(os.path.join(str(nnUNet_raw), name), dataset_json["file_ending"]))
    labels = require_labels(dataset_json, cases, raw_json_path)
    groups = read_groups_csv(groups_csv, cases) if groups_csv else {c: c for c in cases}
    target = os.path.join(str(nnUNet_preprocessed), name, SPLITS_FILE)
    raw_target = os.path.join(str(nnUNet_raw), name, SPLITS_FILE)
    if os.path.isfile(target) and not force:
        raise MVExtError(f"{target} exists; nnU-Net trains on it. Pass --force to replace it (a backup is kept).")
    if os.path.isfile(raw_target) and not force:
        raise MVExtError(f"{raw_target} exists (e.g. the official folds of import-lld); nnU-Net's planner copies it "
                         f"to {target} and stops when the two differ. Pass --force to replace both with the new "
                         f"folds (a backup of each is kept).")
    splits = stratified_group_splits(cases, labels, groups, n_folds, seed, class_names)
    counts = {c: len({groups[k] for k in cases if labels[k] == c}) for c in range(len(class_names))}
    for i, split in enumerate(splits):
        lacking = [class_names[c] for c in range(len(class_names)) if counts[c] and
                   not any(labels[k] == c for k in split["val"])]
        if lacking:
            logger.warning("WARNING: fold %d has no validation case of class %s (%s); the data hold too few groups "
                           "of it for %d folds.", i, ", ".join(lacking),
                           ", ".join(f"{class_names[c]}: {counts[c]} groups" for c in range(len(class_names))),
                           n_folds)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    backup = write_json_with_backup(target, splits)
    if os.path.isfile(raw_target):
        raw_backup = write_json_with_backup(raw_target, splits)
        logger.warning("Replaced %s too (nnU-Net's planner copies it and asserts it equals %s); the previous raw "
                       "splits are in %s.", raw_target, target, raw_backup)
    if backup:
        trained = trained_fold_folders(name)
        logger.warning("Replaced %s; the previous splits are in %s.", target, backup)
        if trained:
            logger.warning("WARNING: these folds were trained on the previous splits and no longer match "
                           "splits_final.json; retrain them before pooling their validation: %s", ", ".join(trained))
    logger.info("Wrote %d folds to %s (%d cases, %d groups, stratified by %s).", n_folds, target, len(cases),
                len(set(groups.values())), ", ".join(class_names))
    return target
