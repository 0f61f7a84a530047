"""Quality check: plain nnU-Net (nnUNetTrainerMV) vs nnUNetTrainerMBTFE, same plan, schedule and fold.

Generates the synthetic multi-phase dataset, runs ``nnUNetv2_plan_and_preprocess``, adds one configuration with the
given ``trainer_settings``, trains both trainers on fold 0 with ``nnUNetv2_train``, predicts the held-out cases with
``nnUNetv2_predict`` and evaluates them with ``nnUNetv2_evaluate_folder``. Prints Dice per label for both.

GPU run (the one RESULTS.md needs)::

    python benchmarks/mbtfe_dice_comparison.py --workdir /tmp/cmp --device cuda --epochs 100 --iterations 250 \\
        --num-train 40 --num-test 20 --shape 96 96 96 --append benchmarks/RESULTS.md

``--smoke`` uses the tiny CPU configuration for 2 short epochs: it checks the script, not quality.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
import tempfile

import torch

from nnunet_mvext.pipeline import claim_output, console_script, nnunet_paths, predict_and_evaluate, run_console_script
from nnunet_mvext.planning.plans_config import add_configuration
from nnunet_mvext.synthetic.multiphase import generate_multiphase_dataset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results_file import pipeline_arguments, pipeline_workspace, report

logger = logging.getLogger("mbtfe_dice_comparison")
TRAINERS = ("nnUNetTrainerMV", "nnUNetTrainerMBTFE")


def main() -> None:
    parser = pipeline_arguments(__doc__.splitlines()[0], 40, 20, (96, 96, 96))
    args = parser.parse_args()
    workdir, env, logs = pipeline_workspace(args)
    dataset = generate_multiphase_dataset(env["nnUNet_raw"], dataset_id=502, num_train=args.num_train,
                                          num_test=args.num_test, shape=args.shape)
    run_console_script([console_script("nnUNetv2_plan_and_preprocess"), "-d", "502", "-c", "3d_fullres", "-np",
                        env["nnUNet_def_n_proc"]], env, os.path.join(logs, "plan_and_preprocess.log"))
    settings = {"num_epochs": args.epochs, "num_iterations_per_epoch": args.iterations}
    if args.smoke:
        template, settings = "3d_tiny_cpu", {"num_epochs": 2, "num_iterations_per_epoch": 5}
    else:
        template = os.path.join(tempfile.mkdtemp(), "3d_compare.json")
        with open(template, "w") as f:
            json.dump({"description": "plain vs MBTFE comparison", "inherits_from": "3d_fullres"}, f)
    with nnunet_paths(env):
        add_configuration("502", template, name="3d_compare", extra_trainer_settings=settings)

    results = {}
    for trainer in TRAINERS:
        logger.info("training %s", trainer)
        seconds = run_console_script([console_script("nnUNetv2_train"), "502", "3d_compare", "0", "-tr", trainer,
                                      "-device", args.device], env, os.path.join(logs, f"train_{trainer}.log"))
        dice, mean, _ = predict_and_evaluate(dataset, 502, "3d_compare", trainer, args.device,
                                             claim_output(workdir, f"predictions_{trainer}"), env, logs)
        results[trainer] = (dice, mean, seconds)

    labels = list(results[TRAINERS[0]][0])
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    lines = [f"### Plain vs MBTFE Dice, {datetime.date.today()}, {device_name}, torch {torch.__version__}", "",
             f"`python benchmarks/mbtfe_dice_comparison.py {' '.join(sys.argv[1:])}`: synthetic dataset "
             f"{args.num_train} training / {args.num_test} held-out cases of {'x'.join(map(str, args.shape))}, fold 0, "
             f"{settings['num_epochs']} epochs x {settings['num_iterations_per_epoch']} iterations.", "",
             "| trainer | " + " | ".join(f"Dice {label}" for label in labels) + " | mean | training s |",
             "| --- | " + " | ".join("---" for _ in labels) + " | --- | --- |"]
    for trainer, (dice, mean, seconds) in results.items():
        lines.append(f"| {trainer} | " + " | ".join(f"{dice[label]:.4f}" for label in labels) +
                     f" | {mean:.4f} | {seconds:.0f} |")
    report(lines, args.append)


if __name__ == "__main__":
    main()
