"""The folder and files every synthetic generator of this package writes: nnU-Net's raw dataset layout
(``imagesTr``/``labelsTr``/``imagesTs``/``labelsTs``), ``dataset.json``, the held-out classes
(``labelsTs/classification.csv``) and the ground truth (``cases.json``), and :class:`SyntheticDataset`, where a
generated dataset lies."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from nnunet_mvext.errors import MVExtError


@dataclass(frozen=True)
class SyntheticDataset:
    """Where a generated dataset lies."""

    dataset_name: str
    folder: str
    train_cases: tuple
    test_cases: tuple
    channel_names: tuple = ("arterial", "portal_venous", "delayed")
    class_names: tuple = ("persistent", "washout")
    box_labels: bool = False

    @property
    def images_ts(self) -> str:
        return os.path.join(self.folder, "imagesTs")

    @property
    def labels_ts(self) -> str:
        return os.path.join(self.folder, "labelsTs")


def write_image(array: np.ndarray, path: str, spacing: Sequence[float]) -> None:
    """``array`` (z, y, x) as a compressed image with ``spacing`` given in the same (z, y, x) order."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    sitk.WriteImage(image, path, useCompression=True)


def new_dataset_folder(raw_folder: str, dataset_id: int, dataset_name: str) -> tuple[str, str]:
    """``(Dataset<ID>_<name>, its folder)`` with empty ``imagesTr``/``labelsTr``/``imagesTs``/``labelsTs``; refuses an
    existing folder (a generator never overwrites a dataset)."""
    full_name = f"Dataset{dataset_id:03d}_{dataset_name}"
    folder = os.path.join(raw_folder, full_name)
    if os.path.exists(folder):
        raise MVExtError(f"Dataset folder {folder} already exists; refusing to overwrite it. "
                         f"Remove it or choose another dataset id.")
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        os.makedirs(os.path.join(folder, sub))
    return full_name, folder


def write_dataset_files(folder: str, dataset_json: dict, cases: dict) -> None:
    """``dataset.json``, the held-out classes (``labelsTs/classification.csv``) and the ground truth
    (``cases.json``) of a generated dataset; ``cases`` maps "Tr"/"Ts" to dataclass cases with ``case_id``, ``label``."""
    with open(os.path.join(folder, "dataset.json"), "w") as f:
        json.dump(dataset_json, f, indent=2)
    with open(os.path.join(folder, "labelsTs", "classification.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["case_id", "class"])
        writer.writerows([(c.case_id, c.label) for c in cases["Ts"]])
    with open(os.path.join(folder, "cases.json"), "w") as f:
        json.dump({split: [asdict(c) for c in cs] for split, cs in cases.items()}, f, indent=1)
