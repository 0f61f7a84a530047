"""Case-level class labels in ``dataset.json`` and ``nnunet-mvext set-classes``.

The block (nnU-Net copies ``dataset.json`` into the preprocessed and results folders, so it travels with the model)::

    "classification": {"class_names": {"0": "low_grade", "1": "high_grade"}, "labels": {"case_000": 1, ...}}

``set-classes DATASET LABELS.csv`` writes it from a CSV with header ``case_id,class`` into the raw ``dataset.json``
and, when the dataset was already preprocessed, into the preprocessed copy too.
"""

from __future__ import annotations

import os
from typing import Iterable, Optional, Sequence

from nnunet_mvext.csv_files import read_csv_rows
from nnunet_mvext.errors import MVExtError
from nnunet_mvext.json_files import read_json, write_json_with_backup

BLOCK = "classification"


def read_labels_csv(path: str) -> dict[str, str]:
    """``{case_id: raw class text}`` from a ``case_id,class`` CSV; duplicate ids are refused by row number."""
    if not os.path.isfile(path):
        raise MVExtError(f"Labels file {path} does not exist.")
    rows = read_csv_rows(path)
    if not rows or [c.strip() for c in rows[0]] != ["case_id", "class"]:
        raise MVExtError(f"{path}: the first row must be the header 'case_id,class', got {rows[0] if rows else []}.")
    labels: dict[str, str] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != 2:
            raise MVExtError(f"{path}, row {number}: expected 2 columns (case_id,class), got {row}.")
        case_id, value = row[0].strip(), row[1].strip()
        if case_id in labels:
            raise MVExtError(f"{path}, row {number}: duplicate case id '{case_id}'.")
        labels[case_id] = value
    if not labels:
        raise MVExtError(f"{path} has a header but no case rows; expected one 'case_id,class' row per case.")
    return labels


def parse_class_indices(raw: dict[str, str], num_classes: Optional[int], source: str) -> dict[str, int]:
    """Integer classes in ``0 .. num_classes-1`` (``num_classes`` None: any integer >= 0)."""
    out = {}
    for case_id, value in raw.items():
        try:
            cls = int(value)
        except ValueError:
            raise MVExtError(f"{source}: case '{case_id}' has class '{value}', which is not an integer "
                             f"class index.") from None
        if cls < 0 or (num_classes is not None and cls >= num_classes):
            allowed = f"0..{num_classes - 1}" if num_classes is not None else ">= 0"
            raise MVExtError(f"{source}: case '{case_id}' has class {cls}, out of range (allowed: {allowed}).")
        out[case_id] = cls
    return out


def training_case_ids(raw_dataset_folder: str, file_ending: str) -> set[str]:
    """Case ids that have images in ``imagesTr`` (``CASE_XXXX<file_ending>``)."""
    folder = os.path.join(raw_dataset_folder, "imagesTr")
    if not os.path.isdir(folder):
        raise MVExtError(f"{folder} does not exist.")
    return {f[:-len(file_ending) - 5] for f in os.listdir(folder) if f.endswith(file_ending)}


def build_block(labels: dict[str, int], class_names: Optional[Sequence[str]]) -> dict:
    if class_names is not None:
        seen = set()
        for name in class_names:
            if not name:
                raise MVExtError(f"--class-names {','.join(class_names)}: a class name is empty.")
            if name in seen:
                raise MVExtError(f"--class-names {','.join(class_names)}: class name '{name}' is given twice; "
                                 f"every class needs its own name.")
            seen.add(name)
    num_classes = len(class_names) if class_names else max(labels.values()) + 1
    if num_classes < 2:
        raise MVExtError(f"At least two classes are needed; the labels use {num_classes}.")
    names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
    return {"class_names": {str(i): n for i, n in enumerate(names)}, "labels": dict(sorted(labels.items()))}


def set_classes(dataset: str, labels_csv: str, class_names: Optional[Sequence[str]] = None) -> list[str]:
    """Validate the CSV against ``imagesTr`` and write the block; returns the ``dataset.json`` files written."""
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    try:
        dataset_name = maybe_convert_to_dataset_name(dataset)
    except RuntimeError as e:
        raise MVExtError(f"Dataset '{dataset}' not found: {e}") from None
    raw_folder = os.path.join(nnUNet_raw.require(), dataset_name)
    dataset_json = read_json(os.path.join(raw_folder, "dataset.json"), "dataset.json")
    raw = read_labels_csv(labels_csv)
    known = training_case_ids(raw_folder, dataset_json["file_ending"])
    unknown = [c for c in raw if c not in known]
    if unknown:
        raise MVExtError(f"{labels_csv}: case id '{unknown[0]}' has no images in {os.path.join(raw_folder, 'imagesTr')}"
                         + (f" (and {len(unknown) - 1} more: {unknown[1:6]})" if len(unknown) > 1 else "") + ".")
    labels = parse_class_indices(raw, len(class_names) if class_names else None, labels_csv)
    block = build_block(labels, class_names)
    written = []
    targets = [os.path.join(raw_folder, "dataset.json")]
    if nnUNet_preprocessed.is_set():
        targets.append(os.path.join(str(nnUNet_preprocessed), dataset_name, "dataset.json"))
    for path in targets:
        if not os.path.isfile(path):
            continue
        content = read_json(path, "dataset.json")
        content[BLOCK] = block
        write_json_with_backup(path, content)
        written.append(path)
    return written


def class_block(dataset_json: dict, source: str) -> dict:
    """The validated block of a ``dataset.json``."""
    block = dataset_json.get(BLOCK)
    if not isinstance(block, dict) or not isinstance(block.get("labels"), dict) or \
            not isinstance(block.get("class_names"), dict):
        raise MVExtError(f"{source} has no '{BLOCK}' block with 'class_names' and 'labels'. "
                         f"Write it with: nnunet-mvext set-classes DATASET LABELS.csv")
    return block


def names_in_order(class_names_entry: dict, source: str) -> list[str]:
    """``["name of 0", "name of 1", ...]`` from a block's ``class_names`` (keys "0" .. "K-1")."""
    keys = [str(i) for i in range(len(class_names_entry))]
    if sorted(class_names_entry) != sorted(keys):
        raise MVExtError(f"{source}: '{BLOCK}' 'class_names' has the keys {sorted(class_names_entry)}; expected "
                         f"{keys} (one name per class index).")
    return [str(class_names_entry[k]) for k in keys]


def class_names(dataset_json: dict, source: str) -> list[str]:
    return names_in_order(class_block(dataset_json, source)["class_names"], source)


def dataset_class_names(dataset: str) -> tuple[list[str], str]:
    """``(class names, path)`` of the ``classification`` block of a dataset's ``dataset.json`` (``dataset``: id or
    name, as ``-d``): the raw one, else the preprocessed copy."""
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    try:
        name = maybe_convert_to_dataset_name(dataset)
    except RuntimeError as e:
        raise MVExtError(f"Dataset '{dataset}' not found: {e}") from None
    candidates = [os.path.join(str(root), name, "dataset.json") for root in (nnUNet_raw, nnUNet_preprocessed)
                  if root.is_set()]
    for path in candidates:
        if os.path.isfile(path):
            return class_names(read_json(path, "dataset.json"), path), path
    raise MVExtError(f"-d {dataset}: no dataset.json found (looked for {' and '.join(candidates) or 'nnUNet_raw'}).")


def require_labels(dataset_json: dict, case_ids: Iterable[str], source: str) -> dict[str, int]:
    """Labels of ``case_ids``; names every case without one."""
    labels = class_block(dataset_json, source)["labels"]
    missing = sorted(c for c in case_ids if c not in labels)
    if missing:
        raise MVExtError(f"{len(missing)} training case(s) have no class label in {source}: "
                         f"{', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''}. "
                         f"Add them with nnunet-mvext set-classes.")
    return {c: int(labels[c]) for c in case_ids}
