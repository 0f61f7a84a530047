"""Held-out classification of a trained fusion model with each single phase left out at inference.

For every phase p, every held-out case is classified with phase p marked absent (as ``missing_phases: zero`` does
for a case whose series is missing: the phase's embedding is zero and ABAF's beta of it 0), and once with every phase
present, from one patch centred on the case's ground-truth lesion (as ``predict-cls --roi``), without mirroring.
Metrics from :func:`nnunet_mvext.classification.metrics.classification_metrics` (macro-F1 over the classes present,
Cohen's kappa, macro AUC). The model, its fold and checkpoint, and the held-out cases are given on the command line;
the held-out cases are preprocessed by nnU-Net's preprocessor with the model's plans::

    python benchmarks/missing_phase_results.py --model-folder RESULTS/Dataset512_X/TRAINER__nnUNetPlans__3d_fusion \\
        --images-ts RAW/imagesTs --labels-ts RAW/labelsTs --append benchmarks/RESULTS.md

The model may have been trained with either ``missing_phases`` policy: this measures what leaving a phase out costs
a model, trained with every phase (the default) or with phase dropout / missing phases.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import logging
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results_file import recorded_command, report

logger = logging.getLogger("missing_phase_results")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-folder", required=True, help="nnUNet_results/DATASET/TRAINER__PLANS__CONFIGURATION")
    parser.add_argument("--fold", default="0")
    parser.add_argument("--checkpoint", default="checkpoint_final.pth")
    parser.add_argument("--images-ts", required=True, help="held-out images (nnU-Net raw layout)")
    parser.add_argument("--labels-ts", required=True, help="held-out labels and classification.csv")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--append", default=None, help="append the table to this markdown file")
    return parser.parse_args()


def main() -> None:
    args = arguments()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnunet_mvext.classification.case_prediction import classify_case, select_region
    from nnunet_mvext.classification.metrics import classification_metrics
    from nnunet_mvext.classification.prediction_table import phase_names_of

    device = torch.device(args.device)
    fold = args.fold if args.fold == "all" else int(args.fold)
    predictor = nnUNetPredictor(use_mirroring=False, device=device, verbose=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(args.model_folder, [fold], args.checkpoint)
    network = predictor.network
    network.load_state_dict(predictor.list_of_parameters[0])
    network.to(device).eval()
    info = predictor.configuration_manager.configuration["case_classification"]
    dataset_json = predictor.dataset_json
    names = phase_names_of(dataset_json["channel_names"], info["phase_channels"])
    with open(os.path.join(args.labels_ts, "classification.csv")) as f:
        truth = {r[0]: int(r[1]) for r in list(csv.reader(f))[1:]}
    ending = dataset_json["file_ending"]
    preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
    n_channels = len(dataset_json["channel_names"])
    conditions = [("all phases present", None)] + [(f"{n} absent", [q == p for q in range(len(names))])
                                                   for p, n in enumerate(names)]
    probabilities = {c: [] for c, _ in conditions}
    cases = sorted(truth)
    for case in cases:
        files = [os.path.join(args.images_ts, f"{case}_{c:04d}{ending}") for c in range(n_channels)]
        data, seg, _ = preprocessor.run_case(files, os.path.join(args.labels_ts, case + ending),
                                             predictor.plans_manager, predictor.configuration_manager, dataset_json)
        region = select_region(np.asarray(seg[0]), info["lesion_label"], data.shape[1:])
        for condition, absent in conditions:
            result = classify_case(network, torch.from_numpy(data), region, predictor.configuration_manager.patch_size,
                                   None, device, absent)
            probabilities[condition].append(result["probabilities"])
    y = [truth[c] for c in cases]
    lines = [f"### Held-out classification with one phase left out at inference, {datetime.date.today()}, "
             f"{torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}, torch {torch.__version__}", "",
             f"`{recorded_command(__file__)}`", "",
             f"Model {os.path.basename(args.model_folder)} fold {args.fold} ({args.checkpoint}, trained with "
             f"missing_phases '{info.get('missing_phases', 'refuse')}'), {len(cases)} held-out cases, each classified "
             f"from one patch centred on its ground-truth lesion, without mirroring. One model, one run: differences "
             f"inside the intervals of the held-out tables are not differences.", "",
             "| phases at inference | macro AUC | macro-F1 (binary: F1 of class 1) | Cohen's kappa | accuracy | "
             "classes never predicted |",
             "| --- | --- | --- | --- | --- | --- |"]
    for condition, _ in conditions:
        m = classification_metrics(y, np.stack(probabilities[condition]), info["class_names"])
        predicted = np.stack(probabilities[condition]).argmax(1)
        never = [n for k, n in enumerate(info["class_names"]) if not (predicted == k).any()]
        auc = "n/a" if m["auc"] is None else f"{m['auc']:.3f}"
        kappa = "n/a" if m["cohen_kappa"] is None else f"{m['cohen_kappa']:.3f}"
        lines.append(f"| {condition} | {auc} | {m['f1']:.3f} | {kappa} | {m['accuracy']:.3f} | "
                     f"{len(never)}{' (' + ', '.join(never) + ')' if never else ''} |")
    report(lines, args.append)


if __name__ == "__main__":
    main()
