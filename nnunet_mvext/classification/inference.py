"""``nnunet-mvext predict-cls``: segment and classify new cases with a trained fusion model.

Takes ``nnUNetv2_predict``'s model arguments. Before anything is loaded or preprocessed, every input case is checked
(its channel files against the model's ``dataset.json``; its ``--roi`` file when given), and every fold's checkpoint
is read for the fusion description it was trained with: folds whose descriptions differ, models of an earlier
network version and classification-only models without ``--roi`` are refused; input cases that a fold trained on are
named in a warning, as are, with ``-chk checkpoint_best*``, the input cases that checkpoint was selected on (a fold's
validation cases; ``classification.csv`` then holds the provenance columns ``checkpoint`` and
``checkpoint_selected_on_these_cases``, 1 for those cases, which ``evaluate-cls`` reads). Every channel file is read
once (SimpleITK): a phase is missing when the input's ``missing_phases.json`` names it or when its channel is all
zeros (a placeholder: at inference a real series is never all zero); such cases are refused under the model's
``missing_phases: refuse``, and an explicit ``--missing-phases`` record that names none of the input cases is
refused. Then, for each case: nnU-Net's preprocessor, nnU-Net's sliding window (folds ensembled, mirroring unless
``--disable_tta``) exported like ``nnUNetv2_predict``, the region of interest (the most lesion-probable predicted
component, or the ``--roi`` label file), and per fold the lesion-pooled classification of
:mod:`nnunet_mvext.classification.case_prediction`, averaged over folds.

``-o`` receives ``predict_cls.json`` (the marker that names the model, written first), the segmentations,
``classification.csv`` (:mod:`nnunet_mvext.classification.prediction_table`), ``classification_embeddings.npz`` and
the model's ``dataset.json`` and ``plans.json`` (its class names are what ``evaluate-cls`` reads integer reference
classes through). Before anything loads, ``-o`` must be new, empty or an earlier output (its marker): a file or
another non-empty folder is refused unless ``--force``; an earlier ``classification.csv`` is replaced only with
``--overwrite`` or ``--force``. Every file replaced (segmentations, ``classification.csv``, the embeddings, the JSON
files) is first kept as a timestamped ``.bak``, named in the log.

``--threshold stored`` applies the binary threshold that ``evaluate-cls --cv --store-threshold`` chose on the pooled
out-of-fold predictions (``<model folder>/classification_threshold.json``); the default is the arg-max.
``nnunet-mvext evaluate-cls`` (:mod:`nnunet_mvext.classification.evaluation`) scores the CSV.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Optional, Sequence

import numpy as np
import torch

from nnunet_mvext.classification.case_labels import BLOCK, names_in_order
from nnunet_mvext.classification.case_prediction import classify_case, select_region
from nnunet_mvext.classification.fusion_setup import CASE_KEY, check_stored_info, differing_keys
from nnunet_mvext.classification.prediction_table import decision_rule, phase_names_of, write_case_predictions
from nnunet_mvext.errors import MVExtError
from nnunet_mvext.json_files import keep_backup, read_json

logger = logging.getLogger(__name__)
THRESHOLD_FILE = "classification_threshold.json"
OUTPUT_MARKER = "predict_cls.json"


def _cases_text(cases: Sequence[str], limit: int = 10) -> str:
    cases = list(cases)
    return ", ".join(cases[:limit]) + (f" ... ({len(cases)} in all)" if len(cases) > limit else "")


def input_cases(input_folder: str, file_ending: str, num_channels: int) -> dict[str, list[str]]:
    """``{case_id: [channel files]}``; every case must have exactly the channels ``_0000`` .. of the model."""
    if not os.path.isdir(input_folder):
        raise MVExtError(f"Input folder {input_folder} does not exist.")
    cases: dict[str, dict[int, str]] = {}
    for name in sorted(os.listdir(input_folder)):
        if not name.endswith(file_ending) or len(name) < len(file_ending) + 5:
            continue
        stem = name[:-len(file_ending)]
        case_id, channel = stem[:-5], stem[-4:]
        if stem[-5] != "_" or not channel.isdigit():
            continue
        cases.setdefault(case_id, {})[int(channel)] = os.path.join(input_folder, name)
    if not cases:
        raise MVExtError(f"No images named CASE_XXXX{file_ending} in {input_folder}.")
    expected = list(range(num_channels))
    for case_id, channels in cases.items():
        if sorted(channels) != expected:
            raise MVExtError(f"Case '{case_id}' in {input_folder} has channel file(s) "
                             f"{', '.join(f'_{c:04d}' for c in sorted(channels))}, but the model takes {num_channels} "
                             f"channel(s): {', '.join(f'_{c:04d}' for c in expected)}.")
    return {k: [v[c] for c in expected] for k, v in cases.items()}


def _image_size(path: str) -> Optional[tuple]:
    """The voxel size of an image file from its header, or None when ITK cannot read it (nnU-Net's reader decides)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    return tuple(int(v) for v in reader.GetSize())


def check_roi_grids(rois: dict[str, str], cases: dict[str, list[str]]) -> None:
    """Refuse, before any model loads, a ``--roi`` label whose voxel size differs from its case's images (nnU-Net
    would stop at a shape assertion after the output folder was written), naming the case and both sizes."""
    wrong = []
    for case, roi in rois.items():
        roi_size, image_size = _image_size(roi), _image_size(cases[case][0])
        if roi_size is not None and image_size is not None and roi_size != image_size:
            wrong.append(f"{case} (label {roi_size}, images {image_size})")
    if wrong:
        raise MVExtError(f"--roi: {len(wrong)} label file(s) are not on their case's image grid: "
                         f"{', '.join(wrong[:5])}{' ...' if len(wrong) > 5 else ''}. Give labels of the input images "
                         f"(e.g. labelsTs of the same import), voxel for voxel.")


def roi_files(roi_folder: str, case_ids: Sequence[str], file_ending: str) -> dict[str, str]:
    """The ``--roi`` label file of every case (named like nnU-Net labels: ``CASE<file_ending>``)."""
    if not os.path.isdir(roi_folder):
        raise MVExtError(f"--roi folder {roi_folder} does not exist.")
    files = {c: os.path.join(roi_folder, c + file_ending) for c in case_ids}
    missing = [c for c, f in files.items() if not os.path.isfile(f)]
    if missing:
        raise MVExtError(f"--roi {roi_folder} has no label file for {len(missing)} case(s): "
                         f"{', '.join(c + file_ending for c in missing[:10])}{' ...' if len(missing) > 10 else ''}. "
                         f"Give one mask or box label file per input case.")
    return files


def fold_descriptions(model_folder: str, folds: Sequence, checkpoint: str) -> tuple[dict, dict, dict]:
    """``(description, {fold: training case ids}, {fold: validation case ids, None when the checkpoint predates
    recording them})`` from the checkpoints; refuses folds that disagree."""
    infos, training, validation = {}, {}, {}
    for f in folds:
        path = os.path.join(model_folder, f"fold_{f}", checkpoint)
        if not os.path.isfile(path):
            raise MVExtError(f"Missing {path}.")
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        infos[f] = check_stored_info(ckpt.get(CASE_KEY), path)
        training[f] = set(ckpt.get("training_case_ids", ()))
        validation[f] = None if "validation_case_ids" not in ckpt else set(ckpt["validation_case_ids"])
    first = next(iter(infos))
    for f, info in infos.items():
        keys = differing_keys(infos[first], info)
        if keys:
            raise MVExtError(f"Folds {first} and {f} of {model_folder} were trained with different fusion settings "
                             f"({', '.join(keys)}); their predictions cannot be averaged. Pass -f with folds trained "
                             f"alike.")
    return infos[first], training, validation


def checkpoint_selected_on(checkpoint: str, validation: dict, case_ids: Sequence[str]) -> dict:
    """``{fold: [input cases]}``: the input cases on which a fold's ``checkpoint`` was selected. A ``checkpoint_best*``
    (nnU-Net's best pseudo Dice, the fusion trainers' best moving-average AUC) was chosen on the fold's validation
    cases, so its predictions of them are optimistic; they are named in a warning (as is a fold whose checkpoint
    predates recording its validation cases). ``{}`` for any other checkpoint."""
    if not checkpoint.startswith("checkpoint_best"):
        return {}
    selected = {}
    for f, ids in validation.items():
        if ids is None:
            logger.warning("WARNING: %s of fold %s records no validation cases (written by an earlier release): "
                           "whether it was selected on some of these input cases cannot be checked.", checkpoint, f)
            continue
        hit = sorted(set(case_ids) & ids)
        if hit:
            selected[f] = hit
            logger.warning("WARNING: %s of fold %s was selected on its validation cases, %d of which are input "
                           "cases (%s): their predictions are optimistic, not held-out results (classification.csv "
                           "marks them in checkpoint_selected_on_these_cases; evaluate-cls warns). Use "
                           "checkpoint_final.pth for them.", checkpoint, f, len(hit), _cases_text(hit))
    return selected


def _checked_threshold(value, source: str) -> float:
    """``value`` as a threshold: a finite number in [0, 1] (``p_1 >= t``; 0 and 1 are valid rules, and
    ``--store-threshold``'s Youden threshold can be 1.0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value <= 1:
        raise MVExtError(f"{source} is {value!r}; allowed: argmax, stored or a number in [0, 1].")
    return float(value)


def decision_threshold(choice: str, model_folder: str, class_names: Optional[Sequence[str]]) -> Optional[float]:
    """None for the arg-max; the stored threshold for 'stored'; a number for a number. Validated before anything
    loads: a number in [0, 1] from the flag and from ``<model folder>/classification_threshold.json`` alike (its file
    and key named). ``class_names`` None: the two-class check is left to :func:`require_two_classes`."""
    if choice == "argmax":
        return None
    if choice == "stored":
        path = os.path.join(model_folder, THRESHOLD_FILE)
        if not os.path.isfile(path):
            raise MVExtError(f"--threshold stored: {path} does not exist. Choose one on the out-of-fold predictions "
                             f"with nnunet-mvext evaluate-cls --cv ... --store-threshold.")
        stored = read_json(path, "Threshold file")
        if not isinstance(stored, dict) or "threshold" not in stored:
            raise MVExtError(f"--threshold stored: {path} has no 'threshold' key; expected {{\"threshold\": t, ...}} "
                             f"with t in [0, 1], as evaluate-cls --cv --store-threshold writes it.")
        value = _checked_threshold(stored["threshold"], f"--threshold stored: 'threshold' in {path}")
        logger.info("applying the stored threshold %s (%s)", value, stored.get("chosen_on", "?"))
    else:
        try:
            value = float(choice)
        except ValueError:
            raise MVExtError(f"--threshold '{choice}': allowed are argmax, stored or a number in [0, 1].") from None
        value = _checked_threshold(value, "--threshold")
    if class_names is not None:
        require_two_classes(choice, class_names)
    return value


def require_two_classes(choice: str, class_names: Sequence[str]) -> None:
    """A decision threshold needs a binary model."""
    if choice != "argmax" and len(class_names) != 2:
        raise MVExtError(f"--threshold {choice}: a decision threshold needs two classes; this model has "
                         f"{len(class_names)}. Use --threshold argmax.")


def check_output_folder(output_folder: str, overwrite: bool, force: bool) -> None:
    """Refuse, before anything loads, an ``-o`` that is a file, a non-empty folder that is not an earlier output of
    predict-cls (no :data:`OUTPUT_MARKER`) unless ``force``, and an existing ``classification.csv`` unless
    ``overwrite`` or ``force``."""
    if os.path.lexists(output_folder) and not os.path.isdir(output_folder):
        raise MVExtError(f"-o {output_folder} is a file, not a folder; give a new folder or an earlier predict-cls "
                         f"output folder.")
    if not os.path.isdir(output_folder) or not os.listdir(output_folder):
        return
    if not force and not os.path.isfile(os.path.join(output_folder, OUTPUT_MARKER)):
        entries = sorted(os.listdir(output_folder))
        raise MVExtError(f"-o {output_folder} is not empty ({len(entries)} entries: {', '.join(entries[:5])}"
                         f"{' ...' if len(entries) > 5 else ''}) and is not an output of predict-cls (it has no "
                         f"{OUTPUT_MARKER}); predict-cls would replace its dataset.json, plans.json, "
                         f"classification.csv and CASE segmentations. Give a new or empty folder, or pass --force to "
                         f"write into it keeping a timestamped .bak of every file it replaces.")
    csv_path = os.path.join(output_folder, "classification.csv")
    if os.path.isfile(csv_path) and not (overwrite or force):
        raise MVExtError(f"{csv_path} already exists; refusing to overwrite it (use --overwrite to replace it, "
                         f"keeping a timestamped .bak of every file it replaces, or another -o).")


def write_prediction_outputs(output_folder: str, results: dict, class_names: Sequence[str],
                             branch_names: Sequence[str], threshold: Optional[float],
                             checkpoint: Optional[str] = None, selected_cases: Sequence[str] = (),
                             backups: Optional[list] = None, absent: Optional[dict] = None) -> str:
    """``classification.csv``, ``classification_embeddings.npz`` and one console line per case; returns the CSV's
    path. ``results``: ``{case_id: {"probabilities" (K,), "embedding" (D,), "beta" (P,) or None,
    "aux_probabilities" (P, K) or None, "roi"}}``. The console line prints the ``predicted_class`` the CSV holds: one
    decision (the arg-max, or ``p_1 >= threshold``) for both. An existing file is kept as a timestamped ``.bak``
    before it is replaced (its name appended to ``backups``). ``checkpoint``: written in the provenance columns
    ``checkpoint`` and ``checkpoint_selected_on_these_cases`` (1 for the ``selected_cases`` of
    :func:`checkpoint_selected_on`, else 0), which ``evaluate-cls`` reads; None: no provenance columns. ``absent``:
    ``{case: absent per phase}`` (:func:`input_absent_phases`); the auxiliary probabilities of those phases are
    written empty (their classifier saw only the zero embedding of the absent phase), and said so."""
    ids = list(results)
    beta = None if results[ids[0]]["beta"] is None else np.stack([results[c]["beta"] for c in ids])
    aux = None if results[ids[0]]["aux_probabilities"] is None else \
        np.stack([results[c]["aux_probabilities"] for c in ids])
    csv_path = os.path.join(output_folder, "classification.csv")
    embeddings_path = os.path.join(output_folder, "classification_embeddings.npz")
    for path in (csv_path, embeddings_path):
        if keep_backup(path) and backups is not None:
            backups.append(os.path.basename(path))
    blank = None
    if aux is not None and absent:
        blank = np.array([absent.get(c, [False] * len(next(iter(absent.values())))) for c in ids], dtype=bool)
        logger.info("auxiliary probabilities (aux_<phase>_p_<class>) left empty for the missing phases of %d case(s) "
                    "(%s): their classifiers saw no image", int(blank.any(1).sum()),
                    _cases_text([c for c, row in zip(ids, blank) if row.any()]))
    provenance = None if checkpoint is None else {
        "checkpoint": checkpoint,
        "checkpoint_selected_on_these_cases": {c: int(c in set(selected_cases)) for c in ids}}
    predicted = write_case_predictions(csv_path, ids, np.stack([results[c]["probabilities"] for c in ids]),
                                       class_names, [results[c]["roi"] for c in ids], branch_names, beta, aux,
                                       threshold=threshold, provenance=provenance, absent=blank)
    np.savez(embeddings_path, case_ids=np.array(ids), embeddings=np.stack([results[c]["embedding"] for c in ids]))
    rule = decision_rule(class_names, threshold)
    for case_id, name in zip(ids, predicted):
        logger.info("%s: %s (%s; region of interest: %s)", case_id, name, rule, results[case_id]["roi"])
    return csv_path


def input_absent_phases(input_folder: str, record_file: Optional[str], channel_names: dict, info: dict,
                        case_files: dict[str, Sequence[str]]) -> dict[str, list[bool]]:
    """``{case: absent per phase}`` of the input cases that miss a phase; checked before any model loads.

    A phase is missing when ``record_file`` (``--missing-phases``) or the ``missing_phases.json`` beside the input
    folder names it, or when a channel file of it is all zeros (:func:`~nnunet_mvext.classification.missing_phases.
    placeholder_channels`: at inference a placeholder is exactly zero, a real series never is; named in a warning).
    Refused: an explicit record that names none of the input cases (the record of other cases; a dataset's own record
    beside the input folder, which also lists its training cases, is accepted), a case that misses
    every phase, and under the model's policy ``refuse`` (models that predate the setting count as ``refuse``) every
    case that misses a phase, naming the cases."""
    from nnunet_mvext.classification.missing_phases import (
        FILE_NAME,
        absent_phases,
        placeholder_channels,
        validate_missing_phases,
    )

    names = {str(name): int(index) for index, name in channel_names.items()}
    index_name = {index: name for name, index in names.items()}
    record: dict[str, list[str]] = {}
    if record_file is not None and not os.path.isfile(record_file):
        raise MVExtError(f"--missing-phases {record_file} is not a file. Allowed: a missing_phases.json "
                         f"({{case_id: [phase names]}}, as import-lld writes it).")
    source = record_file or os.path.join(os.path.dirname(os.path.abspath(input_folder)), FILE_NAME)
    if os.path.isfile(source):
        record = validate_missing_phases(read_json(source, "Missing-phases record"), names, source)
        beside_input = os.path.basename(source) == FILE_NAME and os.path.dirname(os.path.abspath(source)) == \
            os.path.dirname(os.path.abspath(input_folder))
        if record_file is not None and record and not set(record) & set(case_files) and not beside_input:
            raise MVExtError(f"--missing-phases {record_file} names {len(record)} case(s) "
                             f"({_cases_text(sorted(record))}), none of them an input case of {input_folder} "
                             f"({_cases_text(list(case_files))}); it is the record of other cases. Give the "
                             f"missing_phases.json of these cases (import-lld writes it into the dataset folder, "
                             f"beside imagesTs).")
        record = {case: phases for case, phases in record.items() if case in case_files}
        logger.info("missing phases of the input cases: %s (%d of them listed)", source, len(record))
    used = {c for group in info["phase_channels"] for c in group}  # a channel no phase reads cannot mislead
    zero = {case: [c for c in channels if c in used] for case, channels in placeholder_channels(case_files).items()}
    zero = {case: channels for case, channels in zero.items() if channels}
    unrecorded = {case: sorted(c for c in channels if index_name.get(c) not in record.get(case, ()))
                  for case, channels in zero.items()}
    unrecorded = {case: channels for case, channels in unrecorded.items() if channels}
    missing = {case: sorted({names[p] for p in record.get(case, ())} | set(zero.get(case, ())))
               for case in case_files if case in record or case in zero}
    absent = {case: absent_phases(channels, info["phase_channels"]) for case, channels in missing.items()}
    absent = {case: a for case, a in absent.items() if any(a)}
    unrecorded_text = "; ".join(f"{case}: {', '.join(index_name.get(c, str(c)) for c in channels)}"
                                for case, channels in list(unrecorded.items())[:10]) \
        + (f" ... ({len(unrecorded)} cases in all)" if len(unrecorded) > 10 else "")
    every = [case for case, a in absent.items() if all(a)]
    if every:
        raise MVExtError(f"{len(every)} input case(s) miss every phase ({_cases_text(every)}; recorded in {source} "
                         f"or all-zero channel files): nothing is left to classify them from. Remove them from "
                         f"{input_folder}.")
    if absent and info.get("missing_phases", "refuse") == "refuse":
        raise MVExtError(f"{len(absent)} input case(s) miss a phase ({_cases_text(sorted(absent))})"
                         + (f"; {len(unrecorded)} of them without a record, found as all-zero channel files "
                            f"(placeholders; a real series is never all zero): {unrecorded_text}" if unrecorded
                            else f" according to {source}")
                         + ". The model was trained with trainer_settings 'missing_phases' 'refuse' (or before the "
                           "setting existed), so it would fuse the placeholders as real phases. Predict these cases "
                           "with a model trained with 'missing_phases': 'zero', or leave them out of the input folder.")
    if unrecorded:
        logger.warning("WARNING: %d input case(s) have all-zero channel files that no missing-phase record names "
                       "(%s); a real series is never all zero, so they are treated as missing phases and left out "
                       "of the fusion (missing_phases: zero).", len(unrecorded), unrecorded_text)
    return absent


def predict_classification(input_folder: str, output_folder: str, dataset: str, configuration: str,
                           folds: Sequence, trainer: str, plans: str = "nnUNetPlans",
                           checkpoint: str = "checkpoint_final.pth", device: str = "cuda",
                           use_mirroring: bool = True, overwrite: bool = False, roi_folder: Optional[str] = None,
                           threshold: str = "argmax", force: bool = False,
                           missing_phases_file: Optional[str] = None) -> str:
    """Segment and classify every case of ``input_folder``; returns the path of ``classification.csv``.

    ``output_folder`` (:func:`check_output_folder`): new, empty or an earlier output of predict-cls (recognised by
    :data:`OUTPUT_MARKER`, written first); ``overwrite`` replaces its ``classification.csv``; ``force`` also writes
    into any other folder. Every file replaced is first kept as a timestamped ``.bak``. ``missing_phases_file``: the
    missing-phases record of the input cases (:mod:`~nnunet_mvext.classification.missing_phases`; default the
    ``missing_phases.json`` beside the input folder, if there is one; all-zero channels count as missing too,
    :func:`input_absent_phases`): under the model's policy ``zero`` their missing phases are left out of the fusion,
    under ``refuse`` such cases are refused before any model loads. With a ``checkpoint_best*``, the input cases it
    was selected on are named (:func:`checkpoint_selected_on`)."""
    from batchgenerators.utilities.file_and_folder_operations import save_json
    from nnunetv2.inference.export_prediction import export_prediction_from_logits
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    check_output_folder(output_folder, overwrite, force)
    try:
        model_folder = get_output_folder(dataset, trainer, plans, configuration)
    except RuntimeError as e:
        raise MVExtError(f"Dataset '{dataset}' not found: {e}") from None
    if not os.path.isdir(model_folder):
        raise MVExtError(f"No trained model in {model_folder} (dataset {dataset}, -tr {trainer}, -p {plans}, "
                         f"-c {configuration}).")
    folds = [f if f == "all" else int(f) for f in folds]
    model_json = os.path.join(model_folder, "dataset.json")
    model_dataset_json = read_json(model_json, "dataset.json of the model")
    block = model_dataset_json.get(BLOCK)
    known = isinstance(block, dict) and isinstance(block.get("class_names"), dict)
    cut = decision_threshold(threshold, model_folder,
                             names_in_order(block["class_names"], model_json) if known else None)
    file_ending = model_dataset_json["file_ending"]
    channel_names = model_dataset_json.get("channel_names", model_dataset_json.get("modality", {}))
    cases = input_cases(input_folder, file_ending, len(channel_names))
    rois = roi_files(roi_folder, list(cases), file_ending) if roi_folder is not None else None
    if rois is not None:
        check_roi_grids(rois, cases)
    info, training, validation = fold_descriptions(model_folder, folds, checkpoint)
    if not info["segmentation"] and rois is None:
        raise MVExtError(f"{model_folder} was trained with trainer_settings 'segmentation': false and cannot find "
                         f"the lesion itself: pass --roi FOLDER with one lesion mask or box label file per case "
                         f"(CASE{file_ending}, label {info['lesion_label']} = lesion).")
    for f, ids in training.items():
        seen = sorted(set(cases) & ids)
        if seen:
            logger.warning("WARNING: fold %s was trained on %d of these cases (%s); their predictions are not "
                           "held-out results.", f, len(seen), ", ".join(seen[:10]) + (" ..." if len(seen) > 10 else ""))
    selected = checkpoint_selected_on(checkpoint, validation, list(cases))
    require_two_classes(threshold, info["class_names"])
    absent = input_absent_phases(input_folder, missing_phases_file, channel_names, info, cases)

    torch_device = torch.device(device)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=use_mirroring,
                                perform_everything_on_device=torch_device.type == "cuda", device=torch_device,
                                verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(model_folder, folds, checkpoint)
    stored = predictor.configuration_manager.configuration.get(CASE_KEY) or {}
    if differing_keys(stored, info):
        raise MVExtError(f"{os.path.join(model_folder, 'plans.json')} describes another fusion network than the "
                         f"checkpoints ({', '.join(differing_keys(stored, info))}); it was rewritten by a later "
                         f"training start. Retrain these folds or restore plans.json.")
    os.makedirs(output_folder, exist_ok=True)

    def replaceable(name: str) -> str:
        path = os.path.join(output_folder, name)
        if keep_backup(path):  # nothing of an earlier output is lost: --overwrite and --force alike
            backups.append(name)
        return path

    backups: list[str] = []

    save_json({"written_by": "nnunet-mvext predict-cls", "model_folder": os.path.abspath(model_folder),
               "folds": folds, "checkpoint": checkpoint, "threshold": threshold, "input_folder":
               os.path.abspath(input_folder), "checkpoint_selected_on_cases": {str(f): c for f, c in selected.items()},
               "started": time.strftime("%Y-%m-%d %H:%M:%S")},
              replaceable(OUTPUT_MARKER), sort_keys=False)
    # as nnUNetv2_predict: nnUNetv2_evaluate_folder and postprocessing read these next to the segmentations, and
    # evaluate-cls reads integer reference classes through the class names of this dataset.json
    save_json(predictor.dataset_json, replaceable("dataset.json"), sort_keys=False)
    save_json(predictor.plans_manager.plans, replaceable("plans.json"), sort_keys=False)
    network = predictor.network._orig_mod if hasattr(predictor.network, "_orig_mod") else predictor.network
    network.to(torch_device)
    preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
    mirror_axes = predictor.allowed_mirroring_axes if use_mirroring else None
    results = {}
    for case_id, files in cases.items():
        data, roi_seg, properties = preprocessor.run_case(files, rois[case_id] if rois else None,
                                                          predictor.plans_manager, predictor.configuration_manager,
                                                          predictor.dataset_json)
        data = torch.from_numpy(data)
        segmentation, lesion_probability = None, None
        if network.decoder is not None:
            logits = predictor.predict_logits_from_preprocessed_data(data).float().cpu()
            export_prediction_from_logits(logits, properties, predictor.configuration_manager,
                                          predictor.plans_manager, predictor.dataset_json,
                                          replaceable(case_id + file_ending)[:-len(file_ending)], False)
            probabilities = torch.softmax(logits, 0)
            segmentation = probabilities.argmax(0).numpy()
            lesion_probability = probabilities[info["lesion_label"]].numpy()
        if rois is not None:
            segmentation, lesion_probability = np.asarray(roi_seg[0]), None
        region = select_region(segmentation, info["lesion_label"], data.shape[1:], lesion_probability,
                               info["fallback_roi_label"])
        per_fold = []
        for params in predictor.list_of_parameters:
            network.load_state_dict(params)
            network.eval()
            per_fold.append(classify_case(network, data, region, predictor.configuration_manager.patch_size,
                                          mirror_axes, torch_device, absent.get(case_id)))
        results[case_id] = {key: (None if per_fold[0][key] is None else np.mean([r[key] for r in per_fold], axis=0))
                            for key in ("probabilities", "embedding", "beta", "aux_probabilities")}
        results[case_id]["roi"] = region.source
        logger.info("%s: classified (%d of %d; region of interest: %s)", case_id, len(results), len(cases),
                    region.source)
    csv_path = write_prediction_outputs(
        output_folder, results, info["class_names"],
        info.get("branch_names") or phase_names_of(channel_names, info["phase_channels"]), cut,
        checkpoint if checkpoint.startswith("checkpoint_best") else None,
        sorted({c for hit in selected.values() for c in hit}), backups, absent)
    if backups:
        logger.info("kept %d replaced file(s) of the earlier output in %s as timestamped .bak: %s", len(backups),
                    output_folder, _cases_text(backups))
    return csv_path
