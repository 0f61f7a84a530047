"""Memory and training-step time of the multi-phase fusion network against the plain U-Net of the same plan, per
number of phase encoders P.

Two plans of the kind nnU-Net makes at its default 8 GB target (both fit it with batch 2 for the plain U-Net):

- ``iso``: the typical 3d_fullres plan, patch 128^3, 6 stages, features 32..320, kernels 3^3, strides 1,2,2,2,2,2;
- ``aniso``: a thick-slice plan, patch 20x320x256, 7 stages, features 32..320, kernels 1x3x3 in the first two stages,
  strides (1,1,1), (1,2,2), (1,2,2), (2,2,2), (2,2,2), (1,2,2), (1,2,2).

Per plan and P (``--phases``, default 1,2,3,4,8):

- **Estimate** (meta device, the same on every machine): nnU-Net's planner estimate ``compute_conv_feature_map_size``
  at the plan's patch (batch 1; the batch multiplies every row alike) of the plain U-Net (P input channels) and of
  ``MultiPhaseFusionNet`` (P single-channel phases, segmentation decoder, ABAF head), their ratio, the ratio without
  the decoder (``segmentation: false``), and both networks' parameters.
- **Training step** as the fusion trainer takes it: forward with a lesion mask (a cube in the patch centre), nnU-Net's
  deep-supervised Dice + CE plus the case-classification loss, backward, gradient clipping at 12, nnU-Net's SGD step;
  the plain U-Net's step is nnU-Net's (Dice + CE). ``--warmup`` untimed steps, then ``--steps`` timed ones; median
  milliseconds and the ratio to the plain U-Net (measured once per plan, with one input channel: P input channels
  change only its first conv). On CUDA as nnU-Net trains: batch 2 at the plan's patch, fp16 autocast and GradScaler;
  peak memory is ``torch.cuda.max_memory_allocated`` over the steps. On the CPU fp32, batch 1 and a smaller patch
  (``--cpu-patch-iso``, ``--cpu-patch-aniso``; default 64^3 and 8x128x128) because the plan's patch takes minutes per
  step there: CPU ratios are of that patch.

With ``--append`` the table is appended, with date, device, torch version and the command with every option spelled
out, to a markdown file::

    nice -n 10 python benchmarks/fusion_memory.py --device cpu --append benchmarks/RESULTS.md
    python benchmarks/fusion_memory.py --device cuda --append benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime
import functools
import logging
import os
import statistics
import sys
import time
from types import SimpleNamespace
from typing import Callable, Optional, Sequence

import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nnunet_mvext.architectures.multiphase_fusion_net import MultiPhaseFusionNet
from nnunet_mvext.training_setup.optimizers import build_optimizer
from nnunet_mvext.training_setup.segmentation_losses import build_segmentation_loss, with_deep_supervision
from results_file import device_description, recorded_command, report

logger = logging.getLogger("fusion_memory")

NUM_SEG_CLASSES, NUM_CASE_CLASSES = 3, 2
#: labels only (no regions, no ignore label): what nnU-Net's LabelManager says of the synthetic 3-label task
LABELS = SimpleNamespace(has_regions=False, ignore_label=None)


def _plan(features, kernels, strides, patch) -> dict:
    n = len(features)
    return {"patch": list(patch), "kwargs": dict(
        n_stages=n, features_per_stage=features, conv_op=torch.nn.Conv3d, kernel_sizes=kernels, strides=strides,
        n_conv_per_stage=[2] * n, n_conv_per_stage_decoder=[2] * (n - 1), conv_bias=True,
        norm_op=torch.nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True}, dropout_op=None,
        dropout_op_kwargs=None, nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True})}


def plans(smoke: bool = False) -> dict[str, dict]:
    """The benchmark's plans (``--smoke``: one 3-stage 8..32 plan, patch 16^3)."""
    if smoke:
        return {"smoke": _plan([8, 16, 32], [[3, 3, 3]] * 3, [[1, 1, 1], [2, 2, 2], [2, 2, 2]], (16, 16, 16))}
    return {
        "iso": _plan([32, 64, 128, 256, 320, 320], [[3, 3, 3]] * 6, [[1, 1, 1]] + [[2, 2, 2]] * 5, (128, 128, 128)),
        "aniso": _plan([32, 64, 128, 256, 320, 320, 320], [[1, 3, 3]] * 2 + [[3, 3, 3]] * 5,
                       [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2], [1, 2, 2]], (20, 320, 256)),
    }


def plain_net(plan: dict, channels: int) -> torch.nn.Module:
    return PlainConvUNet(input_channels=channels, num_classes=NUM_SEG_CLASSES, deep_supervision=True, **plan["kwargs"])


#: ``--encoders``: the fusion network's encoder layouts (trainer settings)
ENCODERS = {"per_phase": {}, "shared": {"shared_encoder": True},
            "cls_encoder": {"classification_encoder_width": 1.0}}


def fusion_net(plan: dict, phases: int, segmentation: bool = True, encoders: str = "per_phase") -> MultiPhaseFusionNet:
    return MultiPhaseFusionNet("PlainConvUNet", {**plan["kwargs"], "deep_supervision": True}, phases,
                               NUM_SEG_CLASSES, NUM_CASE_CLASSES, "abaf", segmentation=segmentation,
                               **ENCODERS[encoders])


def estimates(plan: dict, phases: int, encoders: str = "per_phase") -> dict:
    """Meta device: estimates at the plan's patch (plain, fusion, fusion without decoder) and parameters (M)."""
    with torch.device("meta"):
        plain, fusion = plain_net(plan, phases), fusion_net(plan, phases, encoders=encoders)
        no_decoder = fusion_net(plan, phases, segmentation=False,
                                encoders="shared" if encoders == "shared" else "per_phase")
    patch = plan["patch"]
    return {"plain": int(plain.compute_conv_feature_map_size(patch)),
            "fusion": int(fusion.compute_conv_feature_map_size(patch)),
            "no_decoder": int(no_decoder.compute_conv_feature_map_size(patch)),
            "plain_params": sum(p.numel() for p in plain.parameters()) / 1e6,
            "fusion_params": sum(p.numel() for p in fusion.parameters()) / 1e6}


def step_times(build: Callable[[], torch.nn.Module], channels: int, patch: Sequence[int], batch: int, steps: int,
               warmup: int, device: torch.device, fusion: bool) -> tuple[list[float], float]:
    """(milliseconds of each timed training step, peak GiB on CUDA else nan)."""
    torch.manual_seed(0)
    net = build().to(device)
    net.apply(MultiPhaseFusionNet.initialize)
    x = torch.randn(batch, channels, *patch, device=device)
    roi = torch.zeros(batch, 1, *patch, device=device)
    roi[(slice(None), slice(None), *(slice(s // 4, s - s // 4) for s in patch))] = 1
    y = torch.randint(0, NUM_CASE_CLASSES, (batch,), device=device)
    with torch.no_grad():
        shapes = [o.shape[2:] for o in (net.forward_with_classification(x, roi)[0] if fusion else net(x))]
    targets = [torch.randint(0, NUM_SEG_CLASSES, (batch, 1, *s), device=device).float() for s in shapes]
    loss_fn = with_deep_supervision(build_segmentation_loss("dice_ce", LABELS, False, False), len(shapes), False)
    opt = build_optimizer("sgd", net, 1e-2, 3e-5)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")
    times = []
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            if fusion:
                seg, head = net.forward_with_classification(x, roi)
                loss = loss_fn(seg, targets) + net.head.loss(head, y)
            else:
                loss = loss_fn(net(x), targets)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
        scaler.step(opt)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda" else float("nan")
    del net, opt
    return times, peak


def explicit_arguments(args: argparse.Namespace) -> list[str]:
    """Every option spelled out, so that the recorded command does not depend on later defaults."""
    argv = ["--phases", ",".join(map(str, args.phases)), "--plans", ",".join(args.plans), "--device", args.device,
            "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch", str(args.batch),
            "--cpu-patch-iso", *map(str, args.cpu_patch_iso), "--cpu-patch-aniso", *map(str, args.cpu_patch_aniso),
            "--encoders", ",".join(args.encoders)]
    if args.threads is not None:
        argv += ["--threads", str(args.threads)]
    if args.smoke:
        argv.append("--smoke")
    if args.append:
        argv += ["--append", args.append]
    return argv


def parse_arguments(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phases", default="1,2,3,4,8", help="comma-separated phase counts (default: %(default)s)")
    parser.add_argument("--plans", default=None, help="comma-separated subset of iso, aniso (default: both)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: cuda 10, cpu 3; >= 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: cuda 3, cpu 1; >= 1)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: cuda 2 as nnU-Net's plans, "
                                                                 "cpu 1)")
    parser.add_argument("--cpu-patch-iso", type=int, nargs=3, default=[64, 64, 64],
                        help="CPU step-time patch of the iso plan (default: %(default)s)")
    parser.add_argument("--cpu-patch-aniso", type=int, nargs=3, default=[8, 128, 128],
                        help="CPU step-time patch of the aniso plan (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--smoke", action="store_true", help="one tiny plan (3 stages 8..32, patch 16^3)")
    parser.add_argument("--encoders", default="per_phase",
                        help=f"comma-separated encoder layouts of the fusion network, from {', '.join(ENCODERS)} "
                             f"(default: %(default)s)")
    parser.add_argument("--append", default=None, help="append the table to this markdown file")
    args = parser.parse_args(argv)
    cuda = args.device == "cuda"
    args.steps = args.steps if args.steps is not None else (10 if cuda else 3)
    args.warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    args.batch = args.batch if args.batch is not None else (2 if cuda else 1)
    try:
        args.phases = [int(p) for p in args.phases.split(",") if p.strip()]
    except ValueError:
        parser.error(f"--phases {args.phases!r}: comma-separated integers")
    if not args.phases or min(args.phases) < 1:
        parser.error("--phases: at least one phase count, each >= 1")
    known = list(plans(args.smoke))
    args.plans = known if args.plans is None else [p.strip() for p in args.plans.split(",") if p.strip()]
    if not args.plans or set(args.plans) - set(known):
        parser.error(f"--plans {args.plans}: choose from {known}")
    args.encoders = [e.strip() for e in args.encoders.split(",") if e.strip()]
    if not args.encoders or set(args.encoders) - set(ENCODERS):
        parser.error(f"--encoders {args.encoders}: choose from {list(ENCODERS)}")
    if args.steps < 2 or args.warmup < 1 or args.batch < 1:
        parser.error("--steps must be at least 2, --warmup and --batch at least 1")
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    return args


def step_patch(args: argparse.Namespace, name: str, plan: dict) -> list[int]:
    if args.device == "cuda" or args.smoke:
        return plan["patch"]
    return list(args.cpu_patch_iso if name == "iso" else args.cpu_patch_aniso)


def main(argv: Optional[list[str]] = None) -> list[str]:
    args = parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as nnUNetv2_train
    cuda = device.type == "cuda"
    precision = "fp16 autocast + GradScaler" if cuda else "fp32"
    load_before = os.getloadavg()[0]
    lines = [f"### Fusion network memory and step time per phase count, {datetime.date.today()}, "
             f"{device_description(device)}, torch {torch.__version__}", "",
             f"`{recorded_command(__file__, explicit_arguments(args))}`", "",
             f"Estimate: nnU-Net's `compute_conv_feature_map_size` at the plan's patch, batch 1, meta device (the same "
             f"on every machine); 'no decoder' is `segmentation: false`. Step: forward with a lesion mask, deep-"
             f"supervised Dice + CE plus the classification loss (ABAF head), backward, nnU-Net's SGD; batch "
             f"{args.batch}, {precision}, {args.warmup} untimed then {args.steps} timed steps (median); the plain "
             f"U-Net's step with one input channel, once per plan.", "",
             "Encoders: per_phase = one encoder per phase (the default); shared = `shared_encoder: true`; "
             "cls_encoder = `classification_encoder_width: 1` (per-phase segmentation encoders and a classification "
             "encoder shared by the phases from the second resolution on); 'no decoder' of cls_encoder is "
             "per_phase's.", "",
             "| plan | step patch | P | encoders | estimate (M voxels) | x plain | x plain, no decoder | "
             "parameters (M) | plain parameters (M) | ms / step | x plain | peak GiB | x plain |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in args.plans:
        plan = plans(args.smoke)[name]
        patch = step_patch(args, name, plan)
        base, base_peak = step_times(functools.partial(plain_net, plan, 1), 1, patch, args.batch, args.steps,
                                     args.warmup, device, False)
        base_ms = statistics.median(base)
        logger.info("%s plain U-Net: %.1f ms", name, base_ms)
        plain = estimates(plan, 1)
        lines.append(f"| {name} {'x'.join(map(str, plan['patch']))} | {'x'.join(map(str, patch))} | plain U-Net | - | "
                     f"{plain['plain'] / 1e6:.1f} | 1 | - | - | {plain['plain_params']:.1f} | {base_ms:.0f} | 1 | "
                     + (f"{base_peak:.2f} | 1 |" if cuda else "n/a | n/a |"))
        for phases in args.phases:
            for encoders in args.encoders:
                est = estimates(plan, phases, encoders)
                times, peak = step_times(functools.partial(fusion_net, plan, phases, encoders=encoders), phases,
                                         patch, args.batch, args.steps, args.warmup, device, True)
                ms = statistics.median(times)
                logger.info("%s P=%d %s: estimate %.2fx, %.1f ms (%.2fx)", name, phases, encoders,
                            est["fusion"] / est["plain"], ms, ms / base_ms)
                memory = f"{peak:.2f} | {peak / base_peak:.2f}" if cuda else "n/a | n/a"
                lines.append(f"| {name} {'x'.join(map(str, plan['patch']))} | {'x'.join(map(str, patch))} | {phases} "
                             f"| {encoders} | {est['fusion'] / 1e6:.1f} | {est['fusion'] / est['plain']:.2f} | "
                             f"{est['no_decoder'] / est['plain']:.2f} | {est['fusion_params']:.1f} | "
                             f"{est['plain_params']:.1f} | {ms:.0f} | {ms / base_ms:.2f} | {memory} |")
    lines += ["", f"1-minute load average {load_before:.1f} before the run, {os.getloadavg()[0]:.1f} after."]
    report(lines, args.append)
    return lines


if __name__ == "__main__":
    main()
