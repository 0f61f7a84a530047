"""``nnunet-mvext export-lld classification.csv -o team.json``: the LLD-MMRI 2023 submission file.

The challenge's format (``main/predict.py`` and ``main/output/LLDBaseline.json`` of LMMMEng/LLD-MMRI2023) is a JSON
list with one entry per patient::

    [{"image_id": "MR210196", "prediction": 0, "score": [0.99, 0.0001, ...]}, ...]

``score`` holds the 7 class probabilities in the challenge's order
(:data:`~nnunet_mvext.lld_mmri.annotation.CLASS_NAMES`), ``prediction`` the index of the largest.

Input: a ``classification.csv`` of ``predict-cls`` (or ``evaluate-cls --cv``'s ``oof_classification.csv``); its
``p_<class>`` columns are matched to the challenge's classes **by name**, never by position, and a file whose classes
are not exactly the 7 official names is refused, naming what is missing or extra.

**One prediction per patient.** ``import-lld``'s ``lesions.csv`` (``--lesions``) names each case's patient and the
volume of its reference box (mm^3). A patient's probabilities are the mean of its cases' probabilities weighted by
those volumes::

    p_patient = sum_i v_i p_i / sum_i v_i        (cases i of the patient, p_i a probability vector (7,))

In the challenge all lesions of a patient carry the patient's category (``import-lld`` reports where they do not),
so every lesion is evidence for the same label; the weights let a large lesion, whose crop is mostly lesion, count
more than a small one whose crop is mostly margin, without discarding the small ones as taking the largest lesion
alone would. The mean of probability vectors is again one. Without ``--lesions`` every case is its own patient (the
``resample`` alignment's case ids are the patient ids). A patient of whom some cases were predicted and others not
is refused, naming the missing cases: its score would silently rest on part of its lesions.

**Crop case ids without ``--lesions``** (:func:`lesions_file_for`): when every case id has the crop alignment's form
``<patient>_<n>`` (``MR100037_0``), the cases are lesions, not patients. The ``lesions.csv`` is then looked up
through the ``predict_cls.json`` beside the predictions (``predict-cls`` writes it; its ``input_folder`` is the
dataset's ``imagesTs``, and ``import-lld`` writes ``lesions.csv`` into the dataset folder, the parent of
``imagesTs``): used, and said so, when it lists every case; otherwise refused, naming ``--lesions`` and where
``import-lld`` wrote the file. Patient ids may hold ``_`` or ``-`` themselves (``MR-400851``), so ids of other forms,
or a file where only some ids end in ``_<digits>``, are taken as patients.

Refused too, before anything is written: a ``-o`` that is a directory, and a case whose probabilities do not sum to
one (beyond :data:`SUM_TOLERANCE`; the challenge takes ``score`` as a probability vector), naming its row.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from typing import Optional, Sequence

import numpy as np

from nnunet_mvext.classification.metrics import read_predictions_csv
from nnunet_mvext.csv_files import read_csv_rows
from nnunet_mvext.errors import MVExtError
from nnunet_mvext.json_files import backup_path, read_json
from nnunet_mvext.lld_mmri.annotation import CLASS_NAMES

logger = logging.getLogger(__name__)

#: a case's probabilities may differ from a sum of one by this much (the CSV's 6 decimals, 7 classes: < 4e-6)
SUM_TOLERANCE = 1e-3
#: the crop alignment's case id: ``<patient>_<lesion index>``
CROP_CASE_ID = re.compile(r"^.+_\d+$")
PREDICT_MARKER = "predict_cls.json"
LESIONS_FILE = "lesions.csv"


def official_order(class_names: Sequence[str], probabilities: np.ndarray, source: str) -> np.ndarray:
    """``probabilities`` (N, K) with its columns reordered by name into :data:`CLASS_NAMES` order (N, 7); refuses
    class names other than exactly the 7 official ones."""
    missing = [n for n in CLASS_NAMES if n not in class_names]
    extra = [n for n in class_names if n not in CLASS_NAMES]
    if missing or extra:
        raise MVExtError(f"{source}: the probability columns must be exactly p_<class> of the 7 LLD-MMRI classes "
                         f"({', '.join(CLASS_NAMES)})" + (f"; missing: {', '.join(missing)}" if missing else "")
                         + (f"; not an LLD-MMRI class: {', '.join(extra)}" if extra else "")
                         + ". Train on a dataset written by nnunet-mvext import-lld.")
    return np.asarray(probabilities, dtype=float)[:, [list(class_names).index(n) for n in CLASS_NAMES]]


def read_lesions_csv(path: str) -> dict[str, tuple[str, float]]:
    """``{case_id: (patient, box volume mm^3)}`` from ``import-lld``'s ``lesions.csv``; refuses, naming the row, a
    missing column, a duplicated case and a volume that is not a positive number."""
    if not os.path.isfile(path):
        raise MVExtError(f"Lesions file {path} does not exist (import-lld writes it into the dataset folder).")
    rows = read_csv_rows(path)  # UTF-8, UTF-16 (a spreadsheet's "Unicode Text") and cp1252 alike
    header = [c.strip() for c in rows[0]] if rows else []
    needed = ("case_id", "patient", "box_volume_mm3")
    if any(n not in header for n in needed):
        raise MVExtError(f"{path}: the header must hold {', '.join(needed)} (as import-lld writes lesions.csv), got "
                         f"{','.join(header)}.")
    col = {n: header.index(n) for n in needed}
    out: dict[str, tuple[str, float]] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise MVExtError(f"{path}, row {number}: expected {len(header)} columns, got {len(row)}.")
        case, patient, text = (row[col[n]].strip() for n in needed)
        if case in out:
            raise MVExtError(f"{path}, row {number}: case '{case}' appears twice.")
        try:
            volume = float(text)
        except ValueError:
            volume = math.nan
        if not math.isfinite(volume) or volume <= 0 or not patient:
            raise MVExtError(f"{path}, row {number} (case {case}): needs a patient and a positive box_volume_mm3, got "
                             f"'{patient}' and '{text}'.")
        out[case] = (patient, volume)
    return out


def patient_probabilities(case_ids: Sequence[str], probabilities: np.ndarray,
                          lesions: Optional[dict[str, tuple[str, float]]],
                          source: str) -> tuple[list[str], np.ndarray]:
    """``(patients in order of first appearance, (M, K) volume-weighted mean probabilities)`` (module docstring)."""
    if lesions is None:
        lesions = {c: (c, 1.0) for c in case_ids}
    unknown = [c for c in case_ids if c not in lesions]
    if unknown:
        raise MVExtError(f"{source}: {len(unknown)} case(s) are not in the lesions file: {', '.join(unknown[:10])}"
                         f"{' ...' if len(unknown) > 10 else ''}. Give the lesions.csv of the dataset they come from.")
    patients = list(dict.fromkeys(lesions[c][0] for c in case_ids))
    predicted = set(case_ids)
    partial = {p: sorted(c for c, (q, _) in lesions.items() if q == p and c not in predicted) for p in patients}
    partial = {p: cs for p, cs in partial.items() if cs}
    if partial:
        first = next(iter(partial))
        raise MVExtError(f"{source}: {len(partial)} patient(s) have lesion cases without a prediction, e.g. {first}: "
                         f"{', '.join(partial[first])}. Predict every case of a patient (imagesTs holds them).")
    index = {p: i for i, p in enumerate(patients)}
    sums = np.zeros((len(patients), probabilities.shape[1]))
    weights = np.zeros(len(patients))
    for case, p in zip(case_ids, probabilities):
        patient, volume = lesions[case]
        sums[index[patient]] += volume * p
        weights[index[patient]] += volume
    return patients, sums / weights[:, None]


def check_sums(case_ids: Sequence[str], probabilities: np.ndarray, source: str) -> None:
    """Refuse, naming the first such case and its row, probabilities (N, K) whose row sum differs from one by more
    than :data:`SUM_TOLERANCE`."""
    sums = np.asarray(probabilities, dtype=float).sum(1)
    bad = [i for i, v in enumerate(sums) if abs(v - 1) > SUM_TOLERANCE]
    if bad:
        rows = {r[0].strip(): n for n, r in enumerate(read_csv_rows(source)[1:], start=2)
                if r and any(c.strip() for c in r)}
        first = case_ids[bad[0]]
        raise MVExtError(f"{source}, row {rows.get(first, '?')} (case {first}): its p_<class> sum to "
                         f"{sums[bad[0]]:.6f}, not 1 (allowed: within {SUM_TOLERANCE}); {len(bad)} row(s) in all. "
                         f"The challenge reads 'score' as the 7 class probabilities: write the softmax output of "
                         f"predict-cls, not edited or partial columns.")


def lesions_file_for(predictions_csv: str, case_ids: Sequence[str]) -> Optional[str]:
    """The ``lesions.csv`` to use when ``--lesions`` is not given (module docstring): None when the case ids are not
    all of the crop form; the file found through the ``predict_cls.json`` beside ``predictions_csv`` when it lists
    every case (logged); otherwise refused, naming ``--lesions`` and where ``import-lld`` wrote the file."""
    if not all(CROP_CASE_ID.match(c) for c in case_ids):
        return None
    marker = os.path.join(os.path.dirname(os.path.abspath(predictions_csv)), PREDICT_MARKER)
    candidate = None
    if os.path.isfile(marker):
        input_folder = read_json(marker, "predict-cls marker").get("input_folder")
        if isinstance(input_folder, str):
            candidate = os.path.join(os.path.dirname(os.path.abspath(input_folder)), LESIONS_FILE)
    if candidate is not None and os.path.isfile(candidate):
        listed = read_lesions_csv(candidate)
        if all(c in listed for c in case_ids):
            logger.info("--lesions not given: using %s (beside predict-cls's input folder %s, named in %s) to "
                        "average the lesion cases per patient.", candidate, input_folder, marker)
            return candidate
        found = f" {candidate} (found through {marker}) does not list every case."
    elif candidate is not None:
        found = f" {marker} names the input folder {input_folder}, but {candidate} does not exist."
    else:
        found = f" No {PREDICT_MARKER} beside it names the input folder."
    example = ", ".join(case_ids[:3]) + (" ..." if len(case_ids) > 3 else "")
    raise MVExtError(f"{predictions_csv}: every case id has the crop alignment's form <patient>_<n> ({example}): "
                     f"lesion cases, not patients; a submission needs one entry per patient. Pass --lesions "
                     f"<dataset folder>/{LESIONS_FILE} (import-lld writes it into the dataset folder, e.g. "
                     f"$nnUNet_raw/DatasetXXX_LLDMMRI2023/{LESIONS_FILE}, beside imagesTs) to average them per "
                     f"patient.{found}")


def export_submission(predictions_csv: str, output_json: str, lesions_csv: Optional[str] = None,
                      overwrite: bool = False) -> str:
    """Write the submission file (module docstring); returns its path. An existing file is replaced only with
    ``overwrite`` (a timestamped backup is kept); a directory is refused."""
    if os.path.isdir(output_json):
        raise MVExtError(f"-o {output_json} is a directory; give the submission file's path, named after the team "
                         f"(e.g. {os.path.join(output_json, 'team.json')}).")
    if os.path.exists(output_json) and not overwrite:
        raise MVExtError(f"{output_json} exists; add --overwrite to replace it (a backup is kept).")
    case_ids, class_names, probabilities = read_predictions_csv(predictions_csv)
    scores = official_order(class_names, probabilities, predictions_csv)
    check_sums(case_ids, probabilities, predictions_csv)
    if not lesions_csv:
        lesions_csv = lesions_file_for(predictions_csv, case_ids)
    lesions = read_lesions_csv(lesions_csv) if lesions_csv else None
    patients, patient_scores = patient_probabilities(case_ids, scores, lesions, predictions_csv)
    entries = [{"image_id": p, "prediction": int(np.argmax(s)), "score": [float(v) for v in s]}
               for p, s in zip(patients, patient_scores)]
    folder = os.path.dirname(os.path.abspath(output_json))
    os.makedirs(folder, exist_ok=True)
    if os.path.exists(output_json):
        backup = backup_path(output_json)
        shutil.copy2(output_json, backup)
        logger.info("kept the previous %s as %s", os.path.basename(output_json), backup)
    with open(output_json, "w") as f:
        json.dump(entries, f, indent=4)
    logger.info("Wrote %s: %d patient(s) from %d case(s)%s.", output_json, len(entries), len(case_ids),
                f" (lesion cases averaged by box volume, {lesions_csv})" if lesions_csv else "")
    counts = np.bincount([e["prediction"] for e in entries], minlength=len(CLASS_NAMES))
    logger.info("Predicted patients per class: %s", ", ".join(f"{n} {c}" for n, c in zip(CLASS_NAMES, counts)))
    return output_json
