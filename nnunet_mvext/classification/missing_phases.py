"""The per-case record of missing phases: ``missing_phases.json`` in the raw dataset folder.

nnU-Net's preprocessing needs every channel file of a case, so a phase that a case lacks is written as a
placeholder (all zeros on the case's grid) and named here. Training reads this record instead of guessing from the
content (augmentation noise makes a placeholder non-zero); ``predict-cls`` reads it too and, since at inference a
placeholder is exactly zero and a real series never is, also counts an all-zero channel file as missing
(:func:`placeholder_channels`), so that cases copied away from their record are not fused with their placeholders.
Format, one key per case that misses at least one phase (training and test cases alike; a case that is not listed
has every phase)::

    {"MR12345_0": ["DWI"], "MR67890": ["T2WI", "C+Delay"]}

Phase names are channel names of the dataset's ``dataset.json`` (``channel_names``), exactly as written there. A
dataset without the file misses nothing. ``nnunet-mvext import-lld`` writes it.

**Policy** (trainer setting ``missing_phases``, stored with the model): ``refuse`` (default) stops a fusion training
whose dataset records a missing phase for any of its cases, and ``predict-cls`` for such input cases, naming them;
``zero`` leaves a case's missing phases out of the fusion (:func:`absent_phases`; a phase of several channels is
absent when any of its channels is missing): their embedding is zero and ABAF's beta (and the decision head's weight)
of that phase 0, DSN and decision average their auxiliary losses over the present phases, concat sees zeros; the
multi-view trainers leave out every view of the phase. In training the phase is left out the same way, so the model
learns with it missing; ``phase_dropout`` teaches the same on cases that have every phase.
"""

from __future__ import annotations

import json
import os
from typing import Mapping, Optional, Sequence

from nnunet_mvext.errors import MVExtError
from nnunet_mvext.json_files import read_json

FILE_NAME = "missing_phases.json"


def _channel_names(dataset_folder: str) -> Optional[dict[str, int]]:
    """``{channel name: index}`` of the folder's ``dataset.json``, or None when it has none."""
    path = os.path.join(dataset_folder, "dataset.json")
    if not os.path.isfile(path):
        return None
    names = read_json(path, "dataset.json").get("channel_names", {})
    return {str(name): int(index) for index, name in names.items()}


def validate_missing_phases(record, channel_names: Optional[Mapping[str, int]], source: str) -> dict[str, list[str]]:
    """The record as ``{case_id: [phase names]}``; refuses, naming the case and key, anything but an object of
    non-empty lists of distinct channel names (checked against ``channel_names`` when given) that leave at least one
    phase present."""
    if not isinstance(record, dict):
        raise MVExtError(f"{source}: expected an object {{case_id: [phase names]}}, got {type(record).__name__}.")
    out = {}
    for case, phases in record.items():
        if not isinstance(phases, list) or not phases or not all(isinstance(p, str) for p in phases):
            raise MVExtError(f"{source}: case '{case}' has {phases!r}; expected a non-empty list of phase names.")
        repeated = sorted({p for p in phases if phases.count(p) > 1})
        if repeated:
            raise MVExtError(f"{source}: case '{case}' names {', '.join(repeated)} more than once.")
        if channel_names is not None:
            unknown = [p for p in phases if p not in channel_names]
            if unknown:
                raise MVExtError(f"{source}: case '{case}' names {', '.join(repr(p) for p in unknown)}, not a channel "
                                 f"name of dataset.json; allowed: {', '.join(repr(p) for p in channel_names)}.")
            if len(phases) >= len(channel_names):
                raise MVExtError(f"{source}: case '{case}' misses every phase; such a case cannot be imported.")
        out[str(case)] = list(phases)
    return out


def read_missing_phases(dataset_folder: str) -> dict[str, list[str]]:
    """``{case_id: [missing phase names]}`` of ``DATASET_FOLDER/missing_phases.json``, validated against the
    folder's ``dataset.json`` channel names; ``{}`` when the file does not exist (nothing is missing)."""
    path = os.path.join(dataset_folder, FILE_NAME)
    if not os.path.isfile(path):
        return {}
    return validate_missing_phases(read_json(path, "Missing-phases record"), _channel_names(dataset_folder), path)


def missing_channels(dataset_folder: str) -> dict[str, list[int]]:
    """``{case_id: [channel indices]}``: :func:`read_missing_phases` with the phases as ``dataset.json`` channel
    indices (sorted)."""
    record = read_missing_phases(dataset_folder)
    if not record:
        return {}
    names = _channel_names(dataset_folder)
    if names is None:
        raise MVExtError(f"{os.path.join(dataset_folder, FILE_NAME)} needs the folder's dataset.json to map phase "
                         f"names to channels; it has none.")
    return {case: sorted(names[p] for p in phases) for case, phases in record.items()}


def write_missing_phases(dataset_folder: str, record: Mapping[str, list[str]]) -> str:
    """Write the record (cases sorted; cases with an empty list left out); returns the file's path."""
    path = os.path.join(dataset_folder, FILE_NAME)
    content = {case: list(phases) for case, phases in sorted(record.items()) if phases}
    with open(path, "w") as f:
        json.dump(content, f, indent=1)
    return path


#: trainer setting ``missing_phases``
POLICIES = ("refuse", "zero")


def dataset_record(*folders: Optional[str]) -> dict[str, list[int]]:
    """:func:`missing_channels` of the first of ``folders`` that holds the record (e.g. the preprocessed dataset
    folder, then the raw one); ``{}`` when none does."""
    for folder in folders:
        if folder and os.path.isfile(os.path.join(folder, FILE_NAME)):
            return missing_channels(folder)
    return {}


def absent_phases(missing: list[int], phase_channels) -> list[bool]:
    """Per phase group: True when any of its channels is in ``missing`` (channel indices of one case)."""
    missing = set(missing)
    return [any(c in missing for c in group) for group in phase_channels]


def placeholder_channels(case_files: Mapping[str, Sequence[str]]) -> dict[str, list[int]]:
    """``{case: [channel indices]}`` of the channel files that hold only zeros (cases with none left out).

    At inference nothing augments the images, so a placeholder that import-lld (or a user) wrote for a missing phase
    is exactly all zeros, while a real MR series never is (noise, anatomy): ``predict-cls`` treats such a channel as
    missing even where no record names it (a case copied away from its ``missing_phases.json``). Each file is read
    once with SimpleITK; a file it cannot read is refused, naming the case and the file."""
    import numpy as np
    import SimpleITK as sitk

    zero: dict[str, list[int]] = {}
    for case, files in case_files.items():
        for channel, path in enumerate(files):
            try:
                image = sitk.ReadImage(path)
            except RuntimeError as e:
                reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                raise MVExtError(f"Input case '{case}': {path} cannot be read as an image ({reason}). Every channel "
                                 f"file is read before any work; replace or remove the file.") from None
            if not np.any(sitk.GetArrayViewFromImage(image)):
                zero.setdefault(case, []).append(channel)
    return zero


def refuse_missing(record: Mapping[str, list], cases, where: str) -> None:
    """Refuse, naming up to ten cases, when any of ``cases`` misses a phase under the policy ``refuse``."""
    hit = sorted(set(cases) & set(record))
    if hit:
        raise MVExtError(f"{where}: {len(hit)} case(s) miss a phase ({', '.join(hit[:10])}"
                         f"{' ...' if len(hit) > 10 else ''}; see {FILE_NAME}), and trainer_settings "
                         f"'missing_phases' is 'refuse'. Allowed: 'refuse' or 'zero' (a case's missing phases are left "
                         f"out of the fusion in training and inference).")
