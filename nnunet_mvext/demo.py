"""``nnunet-mvext demo``: segmentation and case classification through nnU-Net's pipeline on a generated dataset.

Steps, each through nnU-Net's own console scripts in a subprocess (their full output goes to ``WORKDIR/logs``):
generate the synthetic multi-phase dataset (:mod:`nnunet_mvext.synthetic.multiphase`, 3 phases, class = the lesion's
enhancement change between phases) → ``nnUNetv2_plan_and_preprocess`` → ``add-config`` of a tiny
configuration with Adan settings → ``nnUNetv2_train … -tr nnUNetTrainerFusionABAF`` (one training: segmentation
decoder and ABAF classification head) → ``nnunet-mvext predict-cls`` on the held-out cases (segmentations and
classes) → ``nnUNetv2_evaluate_folder`` (Dice) and ``nnunet-mvext evaluate-cls`` (AUC with DeLong's 95 % interval,
accuracy, the collapse check). ``--fusion`` also trains concat, DSN and decision fusion and prints them side by
side. Sized for about 5 minutes on an otherwise idle 2-core CPU without ``--fusion``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Optional

from nnunet_mvext.errors import MVExtError
from nnunet_mvext.pipeline import (
    claim_output,
    console_script,
    evaluate_segmentation,
    nnunet_environment,
    nnunet_paths,
    prepare_workdir,
    run_console_script,
)

logger = logging.getLogger(__name__)

DEMO_CONFIGURATION = "3d_demo"
DEMO_TRAINER = "nnUNetTrainerFusionABAF"
COMPARED_TRAINERS = ("nnUNetTrainerFusionConcat", "nnUNetTrainerFusionDSN", "nnUNetTrainerFusionDecision")
NUM_TRAIN, NUM_TEST, MISREGISTRATION = 20, 40, 0
# 32^3 = the patch: one sliding window per case. At 40^3 (8 windows) the demo took 344 s on an idle 2-core CPU
# (predict-cls 70 s; lesion Dice 0.870, AUC 0.827), at 32^3 280 s (predict-cls 24 s; lesion Dice 0.806, AUC 0.915
# [0.829, 1.000]). The first 32^3 attempt did not segment the lesion, with classification_loss_weight 1.0 (below).
SHAPE = (32, 32, 32)
# 300 iterations of batch 2 at 32^3 with 8/16/32 features, three phase encoders: about 3 minutes on 2 CPU cores
# classification_loss_weight 0.2: with the default 1.0 the lesion label was not learnt within these 300 iterations
# (held-out lesion Dice 0.000 in three runs), so predict-cls found no lesion; with 0.2 it was
# (see docs/getting_started.md).
# seed 1: with the default network (classification_encoder_width 1) and seed 0 the lesion label was learnt only in the
# last of the 15 epochs (held-out lesion Dice 0.039, AUC 0.635), with seed 1 by epoch 3 (0.845, AUC 0.992); 300
# iterations are too few for every random draw, so the demo warns when the lesion was not learnt (LESION_DICE_WARNING).
DEMO_TRAINER_SETTINGS = {"num_epochs": 15, "num_iterations_per_epoch": 20, "num_val_iterations_per_epoch": 2,
                         "optimizer": "adan", "initial_lr": 3e-3, "warmup_epochs": 1, "save_every": 5, "seed": 1,
                         "classification_loss_weight": 0.2}
#: held-out lesion Dice below which the demo says that the lesion label was not learnt in its short training
LESION_DICE_WARNING = 0.5


@dataclass
class DemoResult:
    """What the demo produced: held-out Dice per label, held-out classification metrics, stage times, outputs."""

    dice_per_label: dict
    mean_dice: float
    classification: dict = field(default_factory=dict)
    stage_seconds: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)


def classify_and_evaluate(dataset, dataset_id: int, trainer: str, device: str, workdir: str, env: dict,
                          logs: str, mirroring: bool) -> tuple[str, dict, dict]:
    """``predict-cls`` on the held-out cases, then ``evaluate-cls``; returns (output folder, metrics, seconds)."""
    out = claim_output(workdir, f"predictions_{trainer}")
    times = {"predict-cls": run_console_script(
        [console_script("nnunet-mvext"), "predict-cls", "-i", dataset.images_ts, "-o", out, "-d", str(dataset_id),
         "-c", DEMO_CONFIGURATION, "-f", "0", "-tr", trainer, "-device", device]
        + ([] if mirroring else ["--disable_tta"]), env, os.path.join(logs, f"predict_cls_{trainer}.log"))}
    times["evaluate-cls"] = run_console_script(
        [console_script("nnunet-mvext"), "evaluate-cls", "-ref", os.path.join(dataset.labels_ts, "classification.csv"),
         "-pred", os.path.join(out, "classification.csv"), "-o", os.path.join(out, "classification_evaluation"),
         "--n-bootstrap", "1000"], env, os.path.join(logs, f"evaluate_cls_{trainer}.log"))
    with open(os.path.join(out, "classification_evaluation", "classification_metrics.json")) as f:
        return out, json.load(f), times


def run_demo(workdir: str, device: str = "cpu", dataset_id: int = 501, force: bool = False,
             trainer_settings: Optional[dict] = None, fusion: bool = False) -> DemoResult:
    """Run the demo pipeline in ``workdir`` and return its :class:`DemoResult`.

    ``fusion`` also trains concat, DSN and decision fusion (about 3 more minutes each on 2 CPU cores).
    """
    if device not in ("cpu", "cuda"):
        raise MVExtError(f"--device must be 'cpu' or 'cuda', got '{device}'.")
    workdir = os.path.abspath(workdir)
    prepare_workdir(workdir, force)
    env = nnunet_environment(workdir, device)
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        claim_output(workdir, name)
    logs = claim_output(workdir, "logs")
    os.makedirs(logs)
    times = {}
    start = time.time()
    logger.info("[1/6] generating the synthetic multi-phase dataset (%d training, %d held-out cases)", NUM_TRAIN,
                NUM_TEST)
    from nnunet_mvext.synthetic.multiphase import generate_multiphase_dataset

    dataset = generate_multiphase_dataset(env["nnUNet_raw"], dataset_id=dataset_id, num_train=NUM_TRAIN,
                                          num_test=NUM_TEST, shape=SHAPE, misregistration_voxels=MISREGISTRATION)
    times["generate"] = time.time() - start

    logger.info("[2/6] nnU-Net planning and preprocessing (3d_fullres)")
    times["plan_and_preprocess"] = run_console_script(
        [console_script("nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id), "-c", "3d_fullres", "-np",
         env["nnUNet_def_n_proc"], "--verify_dataset_integrity"], env, os.path.join(logs, "plan_and_preprocess.log"))

    logger.info("[3/6] adding configuration '%s' (tiny network, Adan) to the plans", DEMO_CONFIGURATION)
    mirroring = device == "cuda"  # test-time mirroring costs 8x on the CPU: left out there to keep the demo short
    settings = {**DEMO_TRAINER_SETTINGS, "validation_mirroring": mirroring, **(trainer_settings or {})}
    t = time.time()
    with nnunet_paths(env):
        from nnunet_mvext.planning.plans_config import add_configuration

        plans_file, _ = add_configuration(str(dataset_id), "3d_tiny_cpu", name=DEMO_CONFIGURATION,
                                          extra_trainer_settings=settings)
    times["add_config"] = time.time() - t

    logger.info("[4/6] training segmentation and classification together: nnUNetv2_train -tr %s (%d epochs x %d "
                "iterations)", DEMO_TRAINER, settings["num_epochs"], settings["num_iterations_per_epoch"])
    times["train"] = run_console_script(
        [console_script("nnUNetv2_train"), str(dataset_id), DEMO_CONFIGURATION, "0", "-tr", DEMO_TRAINER, "-device",
         device], env, os.path.join(logs, f"train_{DEMO_TRAINER}.log"))

    logger.info("[5/6] segmenting and classifying the %d held-out cases with nnunet-mvext predict-cls%s",
                len(dataset.test_cases), "" if mirroring else " --disable_tta")
    predictions, metrics, step_times = classify_and_evaluate(dataset, dataset_id, DEMO_TRAINER, device, workdir, env,
                                                             logs, mirroring)
    times.update(step_times)
    logger.info("[6/6] scoring the segmentations with nnUNetv2_evaluate_folder")
    dice, mean_dice, times["evaluate_folder"] = evaluate_segmentation(dataset, predictions, env,
                                                                      os.path.join(logs, "evaluate_folder.log"))
    classification = {DEMO_TRAINER: metrics}
    if fusion:
        t = time.time()
        for trainer in COMPARED_TRAINERS:
            logger.info("[--fusion] nnUNetv2_train -tr %s, then predict-cls and evaluate-cls", trainer)
            run_console_script([console_script("nnUNetv2_train"), str(dataset_id), DEMO_CONFIGURATION, "0", "-tr",
                                trainer, "-device", device], env, os.path.join(logs, f"train_{trainer}.log"))
            classification[trainer] = classify_and_evaluate(dataset, dataset_id, trainer, device, workdir, env, logs,
                                                            mirroring)[1]
        times["fusion"] = time.time() - t
    else:
        logger.info("(add --fusion to also train concat, DSN and decision fusion: about 3 more minutes each on 2 CPU "
                    "cores)")
    times["total"] = time.time() - start
    results_folder = os.path.join(env["nnUNet_results"], dataset.dataset_name,
                                  f"{DEMO_TRAINER}__nnUNetPlans__{DEMO_CONFIGURATION}")
    outputs = {"raw dataset": dataset.folder, "plans file": plans_file, "trained model": results_folder,
               "training log": os.path.join(results_folder, "fold_0"), "predictions": predictions,
               "classification": os.path.join(predictions, "classification.csv"),
               "evaluation": os.path.join(predictions, "classification_evaluation"), "command logs": logs}
    return DemoResult(dice, mean_dice, classification, times, outputs)


def _interval(metrics: dict, key: str) -> str:
    value = metrics.get(key)
    if value is None:
        return "n/a"
    ci = metrics.get("intervals", {}).get(key, {})
    if ci.get("low") is None:
        return f"{value:.3f}"
    return f"{value:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]"


def format_result(result: DemoResult) -> str:
    """The tables the demo prints."""
    lines = ["", "Held-out Dice (nnUNetv2_evaluate_folder):", f"  {'label':<10} {'Dice':>6}"]
    lines += [f"  {name:<10} {value:>6.3f}" for name, value in result.dice_per_label.items()]
    lines.append(f"  {'mean':<10} {result.mean_dice:>6.3f}")
    lesion = result.dice_per_label.get("lesion")
    if lesion is not None and lesion < LESION_DICE_WARNING:
        lines.append(f"  WARNING: lesion Dice {lesion:.3f}: the lesion label was not learnt within the demo's "
                     f"{DEMO_TRAINER_SETTINGS['num_epochs'] * DEMO_TRAINER_SETTINGS['num_iterations_per_epoch']} "
                     f"iterations, so predict-cls classified from a lesion it hardly found and the classification "
                     f"below says little. A random draw can be this slow at this length; train longer "
                     f"(trainer_settings 'num_epochs') or with another 'seed'.")
    n = next(iter(result.classification.values()))["num_cases"] if result.classification else 0
    lines += ["", f"Held-out case classification, {n} cases (predict-cls + evaluate-cls; 95 % intervals: DeLong for "
                  f"AUC, bootstrap otherwise):",
              f"  {'trainer':<28} {'AUC':>22} {'accuracy':>22}  confusion matrix"]
    for trainer, m in result.classification.items():
        lines.append(f"  {trainer:<28} {_interval(m, 'auc'):>22} {_interval(m, 'accuracy'):>22}  "
                     f"{m.get('confusion_matrix')}")
        if m.get("collapse_warning"):
            lines.append(f"    WARNING: {m['collapse_warning']}")
    lines.append("")
    lines.append("Time per stage (s): " + ", ".join(f"{k} {v:.0f}" for k, v in result.stage_seconds.items()))
    lines.append("")
    lines.append("Outputs:")
    lines += [f"  {k:<14} {v}" for k, v in result.outputs.items()]
    return "\n".join(lines)
