"""Multi-phase classification results: fusion trainers vs single phases vs an early-fusion 3D ResNet-18.

On the synthetic multi-phase dataset (class = how lesion contrast changes between phases), with held-out cases:

- ``nnUNetTrainerFusionConcat``, ``…DSN``, ``…ABAF`` through the whole nnU-Net pipeline (own lesion localisation on
  full volumes: ``nnUNetv2_train`` then ``nnunet-mvext predict-cls`` and ``evaluate-cls``);
- single-phase models: ``nnUNetTrainerFusionConcat`` with ``phase_channels: [[p]]``, one per phase;
- the baseline users try first: torchvision's ``r3d_18`` from scratch, phases stacked as input channels (early
  fusion), trained and tested on ground-truth lesion-centred crops of the same cases;

each on an aligned dataset and on one whose later phases are misregistered by up to ``--misregistration`` voxels.
Also step time and peak memory of the 3-phase fusion network against the plain 3-channel U-Net at the same patch.

GPU run for RESULTS.md::

    python benchmarks/fusion_classification_results.py --workdir /tmp/fusion --device cuda --epochs 100 \\
        --iterations 250 --num-train 60 --num-test 40 --shape 64 64 64 --append benchmarks/RESULTS.md

``--smoke``: tiny configuration, aligned data, ABAF and phase 0 only, one ResNet epoch, on the CPU.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys

import numpy as np
import SimpleITK as sitk
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results_file import pipeline_arguments, pipeline_workspace, report  # noqa: E402

from nnunet_mvext.classification.case_prediction import crop_around, lesion_centre  # noqa: E402
from nnunet_mvext.classification.metrics import classification_metrics  # noqa: E402
from nnunet_mvext.pipeline import claim_output, console_script, nnunet_paths, run_console_script  # noqa: E402
from nnunet_mvext.plans_config import add_configuration  # noqa: E402
from nnunet_mvext.synthetic_dataset import PHASES, generate_multiphase_dataset  # noqa: E402

logger = logging.getLogger("fusion_classification_results")
FUSION = {"concat": "nnUNetTrainerFusionConcat", "dsn": "nnUNetTrainerFusionDSN", "abaf": "nnUNetTrainerFusionABAF"}


def nnunet_model(dataset, dataset_id: int, trainer: str, config: str, device: str, workdir: str, env: dict,
                 logs: str) -> dict:
    """Train one trainer on fold 0, classify the held-out cases with predict-cls, return evaluate-cls metrics."""
    tag = f"{dataset_id}_{trainer}_{config}"
    run_console_script([console_script("nnUNetv2_train"), str(dataset_id), config, "0", "-tr", trainer, "-device",
                        device], env, os.path.join(logs, f"train_{tag}.log"))
    out = claim_output(workdir, f"pred_{tag}")
    run_console_script([console_script("nnunet-mvext"), "predict-cls", "-i", dataset.images_ts, "-o", out, "-d",
                        str(dataset_id), "-c", config, "-f", "0", "-tr", trainer, "-device", device], env,
                       os.path.join(logs, f"predict_{tag}.log"))
    run_console_script([console_script("nnunet-mvext"), "evaluate-cls", "-ref",
                        os.path.join(dataset.labels_ts, "classification.csv"), "-pred",
                        os.path.join(out, "classification.csv"), "-o", os.path.join(out, "eval")], env,
                       os.path.join(logs, f"evaluate_{tag}.log"))
    with open(os.path.join(out, "eval", "classification_metrics.json")) as f:
        return json.load(f)


def lesion_crops(dataset, split: str, crop: int) -> tuple[torch.Tensor, np.ndarray]:
    """Ground-truth lesion-centred crops (N, 3, crop^3), z-scored per channel, and their labels."""
    cases = dataset.train_cases if split == "Tr" else dataset.test_cases
    xs, ys = [], []
    for c in cases:
        images = np.stack([sitk.GetArrayFromImage(sitk.ReadImage(
            os.path.join(dataset.folder, f"images{split}", f"{c.case_id}_{p:04d}.nii.gz"))) for p in range(3)])
        seg = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(dataset.folder, f"labels{split}",
                                                                 f"{c.case_id}.nii.gz")))
        centre = lesion_centre(seg == 2) or tuple(s // 2 for s in seg.shape)
        x = crop_around(torch.from_numpy(images.astype(np.float32)), centre, (crop,) * 3)
        x = (x - x.mean(dim=(1, 2, 3), keepdim=True)) / (x.std(dim=(1, 2, 3), keepdim=True) + 1e-6)
        xs.append(x)
        ys.append(c.label)
    return torch.stack(xs), np.array(ys)


def early_fusion_resnet(dataset, epochs: int, crop: int, device: str) -> dict:
    """torchvision r3d_18 from scratch on stacked phases (early fusion), ground-truth crops; held-out metrics."""
    from torchvision.models.video import r3d_18

    torch.manual_seed(0)
    x_tr, y_tr = lesion_crops(dataset, "Tr", crop)
    x_te, y_te = lesion_crops(dataset, "Ts", crop)
    model = r3d_18(weights=None, num_classes=2).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    y_tr_t = torch.from_numpy(y_tr).long()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x_tr))
        for i in range(0, len(order), 8):
            idx = order[i:i + 8]
            xb = x_tr[idx]
            for axis in (2, 3, 4):  # random mirroring, the same for all phases
                if torch.rand(()) < 0.5:
                    xb = torch.flip(xb, (axis,))
            loss = torch.nn.functional.cross_entropy(model(xb.to(device)), y_tr_t[idx].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        probs = torch.cat([torch.softmax(model(x_te[i:i + 8].to(device)), 1).cpu()
                           for i in range(0, len(x_te), 8)]).numpy()
    return classification_metrics(y_te, probs, ["persistent", "washout"])


def step_time_rows(device: torch.device, patch: int, steps: int, smoke: bool) -> list[str]:
    """Fusion network (3 phases) vs plain 3-channel U-Net: ms per training step and peak memory."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    from mbtfe_step_time import plan_kwargs, train_step_stats

    from nnunet_mvext.architectures.multiphase_fusion_net import MultiPhaseFusionNet

    kw = {**plan_kwargs(smoke), "input_channels": 3}
    arch = {k: v for k, v in kw.items() if k not in ("input_channels", "num_classes", "deep_supervision")}
    builds = {"plain PlainConvUNet, 3 channels": lambda: PlainConvUNet(**kw),
              "MultiPhaseFusionNet, 3 phases (ABAF)": lambda: MultiPhaseFusionNet(
                  "dynamic_network_architectures.architectures.unet.PlainConvUNet", arch, 3, 3, 2, "abaf")}
    rows = ["| network | ms / step | peak GiB | parameters (M) |", "| --- | --- | --- | --- |"]
    for name, build in builds.items():
        ms, peak, params = train_step_stats(build, patch, steps, device, input_channels=3)
        memory = f"{peak:.2f}" if device.type == "cuda" else "n/a"
        rows.append(f"| {name} | {ms:.1f} | {memory} | {params:.1f} |")
    return rows


def main() -> None:
    parser = pipeline_arguments(__doc__.splitlines()[0], 60, 40, (64, 64, 64))
    parser.add_argument("--misregistration", type=int, default=3)
    parser.add_argument("--resnet-epochs", type=int, default=60)
    args = parser.parse_args()
    workdir, env, logs = pipeline_workspace(args)
    if args.smoke:
        settings, template = {"num_epochs": 2, "num_iterations_per_epoch": 4}, "3d_tiny_cpu"
        variants, fusions, phases, resnet_epochs = {"aligned": 0}, ["abaf"], [0], 1
    else:
        settings = {"num_epochs": args.epochs, "num_iterations_per_epoch": args.iterations}
        template = claim_output(workdir, "3d_cls.json")
        with open(template, "w") as f:
            json.dump({"description": "fusion comparison", "inherits_from": "3d_fullres"}, f)
        variants = {"aligned": 0, f"misregistered ({args.misregistration} voxels)": args.misregistration}
        fusions, phases, resnet_epochs = list(FUSION), [0, 1, 2], args.resnet_epochs

    lines = [f"### Multi-phase classification, {datetime.date.today()}, "
             f"{torch.cuda.get_device_name() if args.device == 'cuda' else 'CPU'}, torch {torch.__version__}", "",
             f"`python benchmarks/fusion_classification_results.py {' '.join(sys.argv[1:])}`: held-out AUC / "
             f"accuracy, fold 0, {settings['num_epochs']} epochs x {settings['num_iterations_per_epoch']} "
             f"iterations.", "", "| data | model | AUC | accuracy |", "| --- | --- | --- | --- |"]
    for dataset_id, (variant, shift) in enumerate(variants.items(), start=503):
        dataset = generate_multiphase_dataset(env["nnUNet_raw"], dataset_id=dataset_id, num_train=args.num_train,
                                              num_test=args.num_test, shape=args.shape,
                                              misregistration_voxels=shift)
        run_console_script([console_script("nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id), "-c",
                            "3d_fullres", "-np", env["nnUNet_def_n_proc"]], env,
                           os.path.join(logs, f"plan_{dataset_id}.log"))
        with nnunet_paths(env):
            add_configuration(str(dataset_id), template, name="3d_cls", extra_trainer_settings=settings)
            for p in phases:
                add_configuration(str(dataset_id), template, name=f"3d_phase{p}",
                                  extra_trainer_settings={**settings, "phase_channels": [[p]]})
        results = {}
        for mode in fusions:
            results[f"{FUSION[mode]}"] = nnunet_model(dataset, dataset_id, FUSION[mode], "3d_cls", args.device,
                                                      workdir, env, logs)
        for p in phases:
            results[f"single phase: {PHASES[p]}"] = nnunet_model(dataset, dataset_id, FUSION["concat"],
                                                                 f"3d_phase{p}", args.device, workdir, env, logs)
        results["early-fusion r3d_18, GT crops"] = early_fusion_resnet(dataset, resnet_epochs, 32 if args.smoke
                                                                       else 48, args.device)
        for model, m in results.items():
            auc = "n/a" if m["auc"] is None else f"{m['auc']:.3f}"
            lines.append(f"| {variant} | {model} | {auc} | {m['accuracy']:.3f} |")
            logger.info("%s | %s | AUC %s | accuracy %.3f", variant, model, auc, m["accuracy"])

    device = torch.device(args.device)
    patch = 32 if args.smoke else 128
    lines += ["", f"Training step at patch {patch}^3, batch 2 "
                  f"({'fp16 autocast' if device.type == 'cuda' else 'fp32'}, SGD):", ""]
    lines += step_time_rows(device, patch, 3 if args.smoke else 20, args.smoke)
    report(lines, args.append)


if __name__ == "__main__":
    main()
