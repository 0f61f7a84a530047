"""Multi-phase classification on held-out cases: fusion heads vs early fusion vs every single phase.

Everything goes through nnU-Net's CLI as a user runs it: ``nnUNetv2_plan_and_preprocess`` → ``add-config`` →
``nnUNetv2_train … 0`` (fold 0 of the training cases) → ``nnunet-mvext predict-cls`` on ``imagesTs`` (held-out cases
never used for training or model selection; ``checkpoint_final.pth``) → ``nnunet-mvext evaluate-cls`` (95 %
intervals: DeLong for a binary AUC, stratified bootstrap otherwise).

Data (``--data``):

- ``binary``: 3 phases, misregistered by up to ``--misregistration`` voxels, class = the lesion's enhancement change
  between phases (:mod:`nnunet_mvext.synthetic_dataset`, binary mode);
- ``multiclass``: 7 classes (enhancement patterns), 8 phases, lesion labels as filled boxes, misregistered; the
  held-out split holds every class.

Rows: ``nnUNetTrainerFusionConcat``, ``…DSN``, ``…ABAF``, ``…Decision`` on one encoder per phase; early fusion (the
same network with one phase group holding all channels, ``phase_channels: [[0, …, P-1]]``); each single phase
(``phase_channels: [[p]]``), all reported, none picked on the held-out cases; ABAF with the first release's protocol
(``protocol_ablation``: lesion-only sampling, per-phase intensity augmentation, whole-patch pooling; all three, and
each alone); classification only, localised by the held-out labels (``predict-cls --roi labelsTs``, no decoder): ABAF
over 2.5D views (``nnUNetTrainerMultiViewABAF``, every phase x axial, coronal, sagittal) and ABAF over 3D phase
encoders (``segmentation: false``); ABAF with ``classification_loss_weight`` 0.5 and 1.0 (the other rows: 0.2). The
fold's validation Dice per label (nnU-Net's ``summary.json``) is recorded with each row. ``--rows`` runs a subset;
results are kept in ``WORKDIR/results.json`` and ``--resume`` continues an earlier run in the same work folder, so the
table can be completed in several steps. The table (with every row measured so far) is appended to ``--append``.

CPU run recorded in RESULTS.md (about 5 minutes per row on 2 cores)::

    python benchmarks/fusion_classification_results.py --workdir /tmp/fcr --device cpu --data binary \\
        --append benchmarks/RESULTS.md

GPU: add ``--device cuda`` (test-time mirroring is then on) and larger ``--epochs``/``--iterations``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
import time
from typing import Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results_file import (held_out_metrics, measured_by, recorded_command, report,  # noqa: E402
                          with_interval)

from nnunet_mvext.errors import MVExtError  # noqa: E402
from nnunet_mvext.pipeline import (claim_output, console_script, nnunet_environment, nnunet_paths,  # noqa: E402
                                   prepare_workdir, run_console_script)
from nnunet_mvext.plans_config import add_configuration  # noqa: E402
from nnunet_mvext.synthetic_dataset import generate_multiphase_dataset  # noqa: E402

logger = logging.getLogger("fusion_classification_results")
HEADS = {"concat": "nnUNetTrainerFusionConcat", "dsn": "nnUNetTrainerFusionDSN", "abaf": "nnUNetTrainerFusionABAF",
         "decision": "nnUNetTrainerFusionDecision"}
DATA = {"binary": dict(dataset_id=511, num_phases=3, num_classes=2, box_labels=False),
        "multiclass": dict(dataset_id=512, num_phases=8, num_classes=7, box_labels=True)}


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--data", choices=tuple(DATA), default="binary")
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=25)
    parser.add_argument("--num-train", type=int, default=40)
    parser.add_argument("--num-test", type=int, default=64)
    parser.add_argument("--shape", type=int, nargs=3, default=(40, 40, 40))
    parser.add_argument("--misregistration", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="trainer_settings seed and dataset seed")
    parser.add_argument("--class-priors", type=float, nargs="+", default=None,
                        help="class frequencies of the generated data (default: alternating / uniform)")
    parser.add_argument("--rows", nargs="+", default=None,
                        help="subset of rows: concat dsn abaf decision early phase0 phase1 ... (default: all)")
    parser.add_argument("--resume", action="store_true", help="continue an earlier run in --workdir")
    parser.add_argument("--force", action="store_true", help="replace an earlier run in --workdir")
    parser.add_argument("--append", default=None, help="append the table to this markdown file")
    return parser.parse_args()


#: ABAF with items of the first release's protocol turned back (trainer setting ``protocol_ablation``)
ABLATIONS = {"abaf_first_release": ["lesion_only_sampling", "per_phase_augmentation", "patch_pooling"],
             "abaf_lesion_only_sampling": ["lesion_only_sampling"],
             "abaf_per_phase_augmentation": ["per_phase_augmentation"],
             "abaf_patch_pooling": ["patch_pooling"]}


def rows_for(num_phases: int) -> dict:
    """``{row: (trainer, configuration, extra trainer_settings)}``."""
    rows = {mode: (trainer, "3d_fusion", {}) for mode, trainer in HEADS.items()}
    rows["early"] = (HEADS["concat"], "3d_early", {"phase_channels": [list(range(num_phases))]})
    for p in range(num_phases):
        rows[f"phase{p}"] = (HEADS["concat"], f"3d_phase{p}", {"phase_channels": [[p]]})
    for row, items in ABLATIONS.items():
        rows[row] = (HEADS["abaf"], f"3d_{row}", {"protocol_ablation": items})
    # classification only, localised by the held-out labels (predict-cls --roi): 2.5D views vs 3D phase encoders
    rows["views_abaf_roi"] = ("nnUNetTrainerMultiViewABAF", "3d_views", {})
    rows["abaf_roi"] = (HEADS["abaf"], "3d_fusion_roi", {"segmentation": False})
    # the weight of the classification loss against the segmentation loss (the rows above use 0.2)
    for weight in (0.5, 1.0):
        rows[f"abaf_weight{weight}"] = (HEADS["abaf"], f"3d_abaf_weight{weight}",
                                        {"classification_loss_weight": weight})
    return rows


def validation_dice(results_folder: str, dataset_name: str, trainer: str, configuration: str,
                    row_settings: dict) -> Optional[dict]:
    """nnU-Net's Dice per label on the fold's validation cases (``fold_0/validation/summary.json``); {} for a row
    without a decoder, None where a decoder's summary is missing."""
    if localised_by_labels(trainer, row_settings):
        return {}
    summary = os.path.join(results_folder, dataset_name, f"{trainer}__nnUNetPlans__{configuration}", "fold_0",
                           "validation", "summary.json")
    if not os.path.isfile(summary):
        return None
    with open(summary) as f:
        return {label: m["Dice"] for label, m in json.load(f)["mean"].items()}


def localised_by_labels(trainer: str, row_settings: dict) -> bool:
    """Rows without a decoder: predict-cls localises with the held-out labels (``--roi labelsTs``)."""
    return "MultiView" in trainer or row_settings.get("segmentation") is False


def row_label(row: str, trainer: str) -> str:
    if row == "early":
        return "early fusion (one encoder, all phases as channels)"
    if row.startswith("phase"):
        return f"single phase {row[5:]}"
    if row in ABLATIONS:
        return f"{trainer}, protocol_ablation {', '.join(ABLATIONS[row])}"
    if row == "views_abaf_roi":
        return f"{trainer} (every phase x axial, coronal, sagittal; --roi labelsTs)"
    if row == "abaf_roi":
        return f"{trainer}, segmentation false (3D phase encoders; --roi labelsTs)"
    if row.startswith("abaf_weight"):
        return f"{trainer}, classification_loss_weight {row[len('abaf_weight'):]}"
    return trainer


def main() -> None:
    args = arguments()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    workdir = os.path.abspath(args.workdir)
    spec = DATA[args.data]
    env = nnunet_environment(workdir, args.device)
    results_file = os.path.join(workdir, "results.json")
    if not args.resume:
        prepare_workdir(workdir, args.force, owner="a benchmark script")
        for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "logs", "results.json"):
            claim_output(workdir, name)
        os.makedirs(os.path.join(workdir, "logs"))
    logs = os.path.join(workdir, "logs")
    results = json.load(open(results_file)) if os.path.isfile(results_file) else {}
    dataset = generate_or_load(args, spec, env, logs)
    settings = {"num_epochs": args.epochs, "num_iterations_per_epoch": args.iterations,
                "num_val_iterations_per_epoch": 4, "optimizer": "adan", "initial_lr": 3e-3, "seed": args.seed,
                # as the demo: with 1.0 the lesion label was not learnt in a few hundred iterations (rows
                # abaf_weight0.5 and abaf_weight1.0 measure it)
                "classification_loss_weight": 0.2,
                "save_every": max(1, args.epochs // 2), "validation_mirroring": args.device == "cuda"}
    rows = rows_for(spec["num_phases"])
    selected = args.rows or list(rows)
    unknown = [r for r in selected if r not in rows]
    if unknown:
        raise SystemExit(f"unknown --rows {unknown}; allowed: {', '.join(rows)}")
    for row in selected:
        if row in results:
            logger.info("%s: measured earlier, kept", row)
            continue
        trainer, configuration, row_settings = rows[row]
        with nnunet_paths(env):
            extra = {**settings, **row_settings}
            try:
                add_configuration(str(spec["dataset_id"]), "3d_tiny_cpu", name=configuration,
                                  extra_trainer_settings=extra)
            except MVExtError as e:  # the heads share 3d_fusion: added by an earlier row
                if "already exists" not in str(e):
                    raise
        tag = f"{row}"
        start = time.time()
        run_console_script([console_script("nnUNetv2_train"), str(spec["dataset_id"]), configuration, "0", "-tr",
                            trainer, "-device", args.device], env, os.path.join(logs, f"train_{tag}.log"))
        train_seconds = time.time() - start
        out = claim_output(workdir, f"pred_{tag}")
        run_console_script([console_script("nnunet-mvext"), "predict-cls", "-i", dataset.images_ts, "-o", out, "-d",
                            str(spec["dataset_id"]), "-c", configuration, "-f", "0", "-tr", trainer, "-device",
                            args.device] + ([] if args.device == "cuda" else ["--disable_tta"])
                           + (["--roi", dataset.labels_ts] if localised_by_labels(trainer, row_settings) else []), env,
                           os.path.join(logs, f"predict_{tag}.log"))
        metrics = held_out_metrics(out, dataset.labels_ts, env, os.path.join(logs, f"evaluate_{tag}.log"))
        dice = validation_dice(env["nnUNet_results"], dataset.dataset_name, trainer, configuration, row_settings)
        results[row] = {**metrics, "train_seconds": train_seconds, "trainer": trainer, "validation_dice": dice,
                        "row_settings": row_settings, "command": recorded_command(__file__)}
        with open(results_file, "w") as f:
            json.dump(results, f, indent=1)
        logger.info("%s: AUC %s, accuracy %s", row, with_interval(results[row], "auc"),
                    with_interval(results[row], "accuracy"))
    for row, (trainer, configuration, row_settings) in rows.items():  # rows measured before the Dice was recorded
        if row in results and "validation_dice" not in results[row]:
            results[row]["validation_dice"] = validation_dice(env["nnUNet_results"], dataset.dataset_name, trainer,
                                                              configuration, row_settings)
    with open(results_file, "w") as f:
        json.dump(results, f, indent=1)
    report(table(args, spec, dataset, results, rows), args.append)


def generate_or_load(args, spec: dict, env: dict, logs: str):
    name = f"Dataset{spec['dataset_id']:03d}_MVExtSynthetic"
    kwargs = dict(dataset_id=spec["dataset_id"], num_train=args.num_train, num_test=args.num_test, shape=args.shape,
                  seed=args.seed, misregistration_voxels=args.misregistration, num_phases=spec["num_phases"],
                  num_classes=spec["num_classes"], box_labels=spec["box_labels"], class_priors=args.class_priors)
    if os.path.isdir(os.path.join(env["nnUNet_raw"], name)):
        from nnunet_mvext.synthetic_dataset import SyntheticDataset

        with open(os.path.join(env["nnUNet_raw"], name, "cases.json")) as f:
            cases = json.load(f)
        return SyntheticDataset(name, os.path.join(env["nnUNet_raw"], name), tuple(cases["Tr"]), tuple(cases["Ts"]))
    dataset = generate_multiphase_dataset(env["nnUNet_raw"], **kwargs)
    run_console_script([console_script("nnUNetv2_plan_and_preprocess"), "-d", str(spec["dataset_id"]), "-c",
                        "3d_fullres", "-np", env["nnUNet_def_n_proc"]], env,
                       os.path.join(logs, f"plan_{spec['dataset_id']}.log"))
    return dataset


def dice_text(m: dict) -> str:
    if m.get("validation_dice") is None:
        return "missing"
    return ", ".join(f"{label}: {d:.3f}" for label, d in m["validation_dice"].items()) or "no decoder"


def table(args, spec: dict, dataset, results: dict, rows: dict) -> list[str]:
    device = torch.cuda.get_device_name() if args.device == "cuda" else "CPU (2 cores)"
    lines = [f"### Multi-phase classification, {args.data} data, {datetime.date.today()}, {device}, "
             f"torch {torch.__version__}", "",
             f"`{recorded_command(__file__)}`", "",
             *measured_by(results, rows, recorded_command(__file__)),
             f"{spec['num_phases']} phases, {spec['num_classes']} classes, {len(dataset.train_cases)} training cases "
             f"(fold 0: 80 % train, 20 % validation), {len(dataset.test_cases)} held-out cases, misregistration up to "
             f"{args.misregistration} voxels, {'box' if spec['box_labels'] else 'voxel'} lesion labels; 3-stage "
             f"8/16/32 network, patch 32^3, {args.epochs} epochs x {args.iterations} iterations, Adan 3e-3, "
             f"classification_loss_weight 0.2, seed "
             f"{args.seed}; checkpoint_final.pth; predict-cls{' --disable_tta' if args.device == 'cpu' else ''}. "
             f"Rows marked --roi have no decoder and are localised by the held-out lesion labels, the others by "
             f"their predicted lesion. "
             f"95 % intervals: DeLong (binary AUC), stratified bootstrap (the rest). One training per row: "
             f"differences inside the intervals are not differences.", "",
             "| model | AUC | accuracy | macro-F1 | Cohen's kappa | predicted per class | mean beta | "
             "fold-0 validation Dice per label | train s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row, (trainer, _, _) in rows.items():
        label = row_label(row, trainer)
        if row not in results:
            lines.append(f"| {label} | not run | | | | | | | |")
            continue
        m = results[row]
        beta = ", ".join(f"{k} {v:.2f}" for k, v in m["mean_beta"].items()) or "-"
        lines.append(f"| {label} | {with_interval(m, 'auc')} | {with_interval(m, 'accuracy')} | {m['macro_f1']:.3f} | "
                     f"{with_interval(m, 'cohen_kappa')} | {m['predicted_class_counts']} | {beta} | "
                     f"{dice_text(m)} | {m['train_seconds']:.0f} |")
    return lines


if __name__ == "__main__":
    main()
