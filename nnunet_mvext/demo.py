"""``nnunet-mvext demo``: the whole nnU-Net pipeline with this package's trainer on a generated dataset.

Steps, each through nnU-Net's own console scripts in a subprocess (their full output goes to ``WORKDIR/logs``):
generate the synthetic multi-phase dataset (:mod:`nnunet_mvext.synthetic_dataset`) →
``nnUNetv2_plan_and_preprocess`` → ``add-config`` of a tiny configuration with Adan settings →
``nnUNetv2_train … -tr nnUNetTrainerMVAdan`` → ``nnUNetv2_predict`` on the held-out cases →
``nnUNetv2_evaluate_folder``. Finishes in a few minutes on a 2-core CPU.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Optional

from nnunet_mvext.errors import MVExtError
from nnunet_mvext.pipeline import (claim_output, console_script, nnunet_environment, nnunet_paths,
                                   predict_and_evaluate, prepare_workdir, run_console_script)

logger = logging.getLogger(__name__)

DEMO_CONFIGURATION = "3d_demo"
DEMO_TRAINER = "nnUNetTrainerMVAdan"
FUSION_TRAINERS = ("nnUNetTrainerFusionConcat", "nnUNetTrainerFusionDSN", "nnUNetTrainerFusionABAF")
# 15 epochs x 20 iterations of batch 2 at 32^3 with 8/16/32 features: about a minute on 2 CPU cores.
DEMO_TRAINER_SETTINGS = {"num_epochs": 15, "num_iterations_per_epoch": 20, "num_val_iterations_per_epoch": 2,
                         "optimizer": "adan", "initial_lr": 3e-3, "warmup_epochs": 1, "save_every": 5}

@dataclass
class DemoResult:
    """What the demo produced: per-label Dice on held-out cases, stage times and where every output lies."""

    dice_per_label: dict
    mean_dice: float
    stage_seconds: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    fusion: dict = field(default_factory=dict)


def run_fusion_demo(dataset, dataset_id: int, device: str, workdir: str, env: dict, logs: str) -> dict:
    """Train the three fusion trainers on the demo configuration; classify and evaluate the held-out cases.

    Returns ``{trainer: classification metrics}`` (from ``nnunet-mvext evaluate-cls``).
    """
    results = {}
    reference = os.path.join(dataset.labels_ts, "classification.csv")
    for trainer in FUSION_TRAINERS:
        logger.info("[fusion] nnUNetv2_train -tr %s, then predict-cls and evaluate-cls", trainer)
        run_console_script([console_script("nnUNetv2_train"), str(dataset_id), DEMO_CONFIGURATION, "0", "-tr", trainer,
                            "-device", device], env, os.path.join(logs, f"train_{trainer}.log"))
        out = claim_output(workdir, f"classification_{trainer}")
        run_console_script([console_script("nnunet-mvext"), "predict-cls", "-i", dataset.images_ts, "-o", out, "-d",
                            str(dataset_id), "-c", DEMO_CONFIGURATION, "-f", "0", "-tr", trainer, "-device", device],
                           env, os.path.join(logs, f"predict_cls_{trainer}.log"))
        run_console_script([console_script("nnunet-mvext"), "evaluate-cls", "-ref", reference, "-pred",
                            os.path.join(out, "classification.csv"), "-o", os.path.join(out, "evaluation")],
                           env, os.path.join(logs, f"evaluate_cls_{trainer}.log"))
        with open(os.path.join(out, "evaluation", "classification_metrics.json")) as f:
            results[trainer] = json.load(f)
    return results


def run_demo(workdir: str, device: str = "cpu", dataset_id: int = 501, force: bool = False,
             trainer_settings: Optional[dict] = None, fusion: Optional[bool] = None) -> DemoResult:
    """Run the demo pipeline in ``workdir`` and return its :class:`DemoResult`.

    ``fusion`` (default: on for cuda, off for cpu, where it adds about 16 minutes on 2 cores) also trains the
    three multi-phase classification trainers and evaluates them on the held-out cases.
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
    script = console_script
    times = {}
    start = time.time()
    logger.info("[1/5] generating the synthetic multi-phase dataset")
    from nnunet_mvext.synthetic_dataset import generate_multiphase_dataset

    dataset = generate_multiphase_dataset(env["nnUNet_raw"], dataset_id=dataset_id)
    times["generate"] = time.time() - start

    logger.info("[2/5] nnU-Net planning and preprocessing (3d_fullres)")
    times["plan_and_preprocess"] = run_console_script(
        [script("nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id), "-c", "3d_fullres", "-np",
         env["nnUNet_def_n_proc"], "--verify_dataset_integrity"], env, os.path.join(logs, "plan_and_preprocess.log"))

    logger.info("[3/5] adding configuration '%s' (tiny network, Adan) to the plans", DEMO_CONFIGURATION)
    settings = {**DEMO_TRAINER_SETTINGS, **(trainer_settings or {})}
    t = time.time()
    with nnunet_paths(env):
        from nnunet_mvext.plans_config import add_configuration

        plans_file, _ = add_configuration(str(dataset_id), "3d_tiny_cpu", name=DEMO_CONFIGURATION,
                                          extra_trainer_settings=settings)
    times["add_config"] = time.time() - t

    logger.info("[4/5] training with nnUNetv2_train -tr %s (%d epochs x %d iterations)", DEMO_TRAINER,
                settings["num_epochs"], settings["num_iterations_per_epoch"])
    times["train"] = run_console_script(
        [script("nnUNetv2_train"), str(dataset_id), DEMO_CONFIGURATION, "0", "-tr", DEMO_TRAINER, "-device", device],
        env, os.path.join(logs, "train.log"))

    predictions = claim_output(workdir, "predictions")
    mirroring = device == "cuda"  # test-time mirroring costs 8x on the CPU: left out there to keep the demo short
    logger.info("[5/5] predicting %d held-out cases with nnUNetv2_predict%s, then nnUNetv2_evaluate_folder",
                len(dataset.test_cases), "" if mirroring else " --disable_tta")
    dice, mean_dice, eval_times = predict_and_evaluate(dataset, dataset_id, DEMO_CONFIGURATION, DEMO_TRAINER, device,
                                                       predictions, env, logs, mirroring)
    times.update(eval_times)
    fusion_results = {}
    with_fusion = fusion if fusion is not None else device == "cuda"
    if with_fusion:
        t = time.time()
        fusion_results = run_fusion_demo(dataset, dataset_id, device, workdir, env, logs)
        times["fusion"] = time.time() - t
    else:
        logger.info("(skipping the three fusion classification trainers; add --fusion to train them: about 16 more "
                    "minutes on 2 CPU cores)")
    times["total"] = time.time() - start
    summary = os.path.join(predictions, "summary.json")
    results_folder = os.path.join(env["nnUNet_results"], dataset.dataset_name,
                                  f"{DEMO_TRAINER}__nnUNetPlans__{DEMO_CONFIGURATION}")
    outputs = {"raw dataset": dataset.folder, "plans file": plans_file,
               "trained model": results_folder, "training log": os.path.join(results_folder, "fold_0"),
               "predictions": predictions, "evaluation": summary, "command logs": logs}
    return DemoResult(dice, mean_dice, times, outputs, fusion_results)


def format_result(result: DemoResult) -> str:
    """The table the demo prints."""
    lines = ["", "Held-out Dice (nnUNetv2_evaluate_folder):", f"  {'label':<10} {'Dice':>6}"]
    lines += [f"  {name:<10} {value:>6.3f}" for name, value in result.dice_per_label.items()]
    lines.append(f"  {'mean':<10} {result.mean_dice:>6.3f}")
    if result.fusion:
        lines += ["", "Held-out case classification (predict-cls + evaluate-cls):",
                  f"  {'trainer':<26} {'AUC':>6} {'accuracy':>9}"]
        for trainer, m in result.fusion.items():
            auc = "n/a" if m["auc"] is None else f"{m['auc']:.3f}"
            lines.append(f"  {trainer:<26} {auc:>6} {m['accuracy']:>9.3f}")
    lines.append("")
    lines.append("Time per stage (s): " + ", ".join(f"{k} {v:.0f}" for k, v in result.stage_seconds.items()))
    lines.append("")
    lines.append("Outputs:")
    lines += [f"  {k:<14} {v}" for k, v in result.outputs.items()]
    return "\n".join(lines)
