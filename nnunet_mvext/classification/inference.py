"""``nnunet-mvext predict-cls``: segment and classify new cases with a trained fusion model.

``predict-cls`` takes ``nnUNetv2_predict``'s model arguments and, for each case of ``-i``: preprocesses it with the
model's nnU-Net preprocessor, predicts the segmentation with nnU-Net's sliding window (folds ensembled, mirroring)
and exports it like ``nnUNetv2_predict``; then classifies the case per fold as :mod:`nnunet_mvext.classification.case_prediction`
describes and averages the folds' probabilities. ``-o`` receives the segmentations, ``classification.csv``
(``case_id, predicted_class, p_<class>..., no_lesion_found``) and ``classification_embeddings.npz``.

``nnunet-mvext evaluate-cls`` (:mod:`nnunet_mvext.classification.evaluation`) scores that CSV.
"""

from __future__ import annotations

import logging
import os
from typing import Optional, Sequence

import numpy as np
import torch

from nnunet_mvext.classification.case_prediction import classify_case
from nnunet_mvext.classification.metrics import write_predictions_csv
from nnunet_mvext.errors import MVExtError

logger = logging.getLogger(__name__)
CASE_KEY = "case_classification"


def predict_classification(input_folder: str, output_folder: str, dataset: str, configuration: str,
                           folds: Sequence, trainer: str, plans: str = "nnUNetPlans",
                           checkpoint: str = "checkpoint_final.pth", device: str = "cuda",
                           use_mirroring: bool = True, overwrite: bool = False) -> str:
    """Segment and classify every case of ``input_folder``; returns the path of ``classification.csv``."""
    from nnunetv2.inference.export_prediction import export_prediction_from_logits
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.file_path_utilities import get_output_folder
    from nnunetv2.utilities.utils import create_lists_from_splitted_dataset_folder

    csv_path = os.path.join(output_folder, "classification.csv")
    if os.path.isfile(csv_path) and not overwrite:
        raise MVExtError(f"{csv_path} already exists; refusing to overwrite it (use --overwrite or another -o).")
    model_folder = get_output_folder(dataset, trainer, plans, configuration)
    if not os.path.isdir(model_folder):
        raise MVExtError(f"No trained model in {model_folder} (dataset {dataset}, -tr {trainer}, -p {plans}, "
                         f"-c {configuration}).")
    folds = [f if f == "all" else int(f) for f in folds]
    for f in folds:
        if not os.path.isfile(os.path.join(model_folder, f"fold_{f}", checkpoint)):
            raise MVExtError(f"Missing {os.path.join(model_folder, f'fold_{f}', checkpoint)}.")
    torch_device = torch.device(device)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=use_mirroring,
                                perform_everything_on_device=torch_device.type == "cuda", device=torch_device,
                                verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(model_folder, folds, checkpoint)
    info = predictor.configuration_manager.configuration.get(CASE_KEY)
    if info is None:
        raise MVExtError(f"{model_folder} was not trained by a fusion trainer (no '{CASE_KEY}' in its plans.json); "
                         f"use nnUNetv2_predict for segmentation only.")
    file_ending = predictor.dataset_json["file_ending"]
    cases = create_lists_from_splitted_dataset_folder(input_folder, file_ending, num_processes=1)
    if not cases:
        raise MVExtError(f"No images ending in _XXXX{file_ending} in {input_folder}.")
    os.makedirs(output_folder, exist_ok=True)
    network = predictor.network._orig_mod if hasattr(predictor.network, "_orig_mod") else predictor.network
    network.to(torch_device)
    if network.decoder is None:
        logger.warning("This model was trained with 'segmentation': false: no segmentations are written and every "
                       "case is classified from the patch at the volume centre (flagged as no_lesion_found).")
    preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
    mirror_axes = predictor.allowed_mirroring_axes if use_mirroring else None
    ids, probs, embeddings, found = [], [], [], []
    for files in cases:
        case_id = os.path.basename(files[0])[:-(len(file_ending) + 5)]
        data, _, properties = preprocessor.run_case(files, None, predictor.plans_manager,
                                                    predictor.configuration_manager, predictor.dataset_json)
        data = torch.from_numpy(data)
        seg = None
        if network.decoder is not None:
            logits = predictor.predict_logits_from_preprocessed_data(data).cpu()
            export_prediction_from_logits(logits, properties, predictor.configuration_manager,
                                          predictor.plans_manager, predictor.dataset_json,
                                          os.path.join(output_folder, case_id), False)
            seg = logits.argmax(0).numpy()
        per_fold = []
        for params in predictor.list_of_parameters:
            network.load_state_dict(params)
            network.eval()
            per_fold.append(classify_case(network, data, seg, info["lesion_label"],
                                          predictor.configuration_manager.patch_size, mirror_axes, torch_device))
        ids.append(case_id)
        probs.append(np.mean([r["probabilities"] for r in per_fold], axis=0))
        embeddings.append(np.mean([r["embedding"] for r in per_fold], axis=0))
        found.append(per_fold[0]["lesion_found"])
        logger.info("%s: %s (lesion %s)", case_id, info["class_names"][int(np.argmax(probs[-1]))],
                    "found" if found[-1] else "NOT found")
    write_predictions_csv(csv_path, ids, np.stack(probs), info["class_names"], found)
    np.savez(os.path.join(output_folder, "classification_embeddings.npz"), case_ids=np.array(ids),
             embeddings=np.stack(embeddings))
    return csv_path
