"""Lesion Dice of trained models with a 95 % interval: nnU-Net's per-case Dice of one label on a fold's validation
cases (``fold_X/validation/summary.json``, ``metric_per_case``), its mean and a percentile bootstrap interval over the
cases (scipy.stats.bootstrap, 10,000 resamples, fixed seed).

It answers the fusion trainers' rule for a default (issue 15): a candidate may not make the lesion Dice worse beyond
its interval. Compare a candidate's interval with the baseline's Dice on the same split::

    python benchmarks/validation_dice_interval.py --label 2 --append benchmarks/RESULTS.md \\
        /work/runs/mc48_s0_e35/nnUNet_results/Dataset512_MVExtSynthetic/nnUNetTrainerFusionABAF__nnUNetPlans__3d_abaf_shared

Cases where the label is absent from both reference and prediction (nnU-Net writes Dice NaN) are left out and counted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys

import numpy as np
import torch
from scipy.stats import bootstrap

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results_file import recorded_command, report


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_folders", nargs="+", help="nnU-Net model folders (TRAINER__PLANS__CONFIGURATION)")
    parser.add_argument("--label", required=True, help="the label whose Dice is reported, e.g. 2")
    parser.add_argument("--fold", default="0")
    parser.add_argument("--device", default="CPU (2 cores)", help="the device the models were trained on (title)")
    parser.add_argument("--append", default=None, help="append the table to this markdown file")
    return parser.parse_args()


def dice_interval(summary_json: str, label: str) -> tuple[float, float, float, int, int]:
    """``(mean, low, high, n_cases, n_left_out)`` of the label's per-case Dice in nnU-Net's ``summary.json``."""
    with open(summary_json) as f:
        per_case = json.load(f)["metric_per_case"]
    values = np.array([case["metrics"][label]["Dice"] for case in per_case], dtype=float)
    kept = values[~np.isnan(values)]
    if kept.size < 2:
        raise SystemExit(f"{summary_json}: fewer than two cases with a Dice for label {label}.")
    ci = bootstrap((kept,), np.mean, confidence_level=0.95, n_resamples=10000, method="percentile",
                   random_state=0).confidence_interval
    return float(kept.mean()), float(ci.low), float(ci.high), int(kept.size), int(values.size - kept.size)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = arguments()
    lines = [f"### Validation lesion Dice with 95 % intervals, {datetime.date.today()}, {args.device}, torch "
             f"{torch.__version__}", "", f"`{recorded_command(__file__)}`", "",
             f"nnU-Net's per-case Dice of label {args.label} on fold {args.fold}'s validation cases "
             f"(`validation/summary.json`); mean and percentile bootstrap 95 % interval over the cases.", "",
             "| model folder | cases | Dice of label " + args.label + " | cases without the label |",
             "| --- | --- | --- | --- |"]
    for folder in args.model_folders:
        summary = os.path.join(folder, f"fold_{args.fold}", "validation", "summary.json")
        if not os.path.isfile(summary):
            raise SystemExit(f"{summary} does not exist: no final validation of fold {args.fold} in {folder}.")
        mean, low, high, n, left_out = dice_interval(summary, args.label)
        lines.append(f"| {folder} | {n} | {mean:.3f} [{low:.3f}, {high:.3f}] | {left_out} |")
    report(lines, args.append)


if __name__ == "__main__":
    main()
