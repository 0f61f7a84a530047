"""Training-step time, memory and sliding-window inference time: plain U-Net, ResEnc-M, seed MBTFE+EAB, ours.

nnU-Net's settings: fp16 autocast and GradScaler on the GPU (fp32 on the CPU), nnU-Net's SGD, gradient clipping at
12, Dice+CE with deep supervision, batch 2, the 6-stage 3d_fullres plan (features 32..320, strides 1,2,2,2,2,2).

- Step time: forward + backward + optimizer step (CUDA-synchronised), ``--warmup`` untimed steps, then ``--steps``
  timed ones (at least 10); median, min and max. Peak GPU memory is ``torch.cuda.max_memory_allocated`` over them.
- Memory table, every model at ``--memory-patch`` (default the plan's 128^3), computed on torch's meta device, so
  it is cheap and the same on every machine: nnU-Net's planner estimate ``compute_conv_feature_map_size``, the conv
  outputs counted by forward hooks on every conv (batch 1: what the estimate claims to count), and the bytes autograd
  saves for backward in fp32 at batch 2 (the activation memory of a training step, every tensor storage once).
- Inference: nnU-Net's ``nnUNetPredictor.predict_sliding_window_return_logits`` (step 0.5, Gaussian weighting, no
  mirroring) on one ``--volume``^3 image: ``--inference-warmup`` untimed predictions, then ``--inference-runs`` timed.

``--smoke`` is a tiny version (4 stages 8..64, patch 32^3) that only checks the script. With ``--append`` the tables
are appended, with date, device, torch version, the 1-minute load average and the command with every option spelled
out, to a markdown file::

    python benchmarks/mbtfe_step_time.py --append benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import statistics
import sys
import time
from typing import Callable, Optional

import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from nnunetv2.utilities.label_handling.label_handling import LabelManager

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nnunet_mvext.architectures.mbtfe_unet import MBTFEUNet
from nnunet_mvext.training_setup.optimizers import build_optimizer
from nnunet_mvext.training_setup.segmentation_losses import build_segmentation_loss, with_deep_supervision
from results_file import device_description, recorded_command, report
from seed_reference import seed_reference_unet

logger = logging.getLogger("mbtfe_step_time")

MIN_TIMED_STEPS = 10
PLAIN, OURS = "plain", "ours"
#: ``--models`` key -> the name in the tables
MODEL_NAMES = {PLAIN: "plain PlainConvUNet", "resenc": "ResEnc-M (ResidualEncoderUNet)",
               "seed": "seed MBTFE+EAB (reference)", OURS: "ours (MBTFEUNet defaults)",
               "channels-last": "ours, channels_last", "mbtfe-only": "ours, MBTFE only", "eab-only": "ours, EAB only"}
CONVS = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d,
         torch.nn.ConvTranspose3d)


def plan_kwargs(smoke: bool) -> dict:
    features = [8, 16, 32, 64] if smoke else [32, 64, 128, 256, 320, 320]
    n = len(features)
    return dict(input_channels=1, n_stages=n, features_per_stage=features, conv_op=torch.nn.Conv3d,
                kernel_sizes=[[3, 3, 3]] * n, strides=[[1, 1, 1]] + [[2, 2, 2]] * (n - 1), n_conv_per_stage=2,
                num_classes=3, n_conv_per_stage_decoder=2, conv_bias=True, norm_op=torch.nn.InstanceNorm3d,
                norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=torch.nn.LeakyReLU,
                nonlin_kwargs={"inplace": True}, deep_supervision=True)


def models(smoke: bool) -> dict[str, Callable[[], torch.nn.Module]]:
    """``--models`` key -> a function building the network (keys in :data:`MODEL_NAMES`)."""
    kw = plan_kwargs(smoke)
    n = kw["n_stages"]
    resenc = {k: v for k, v in kw.items() if k not in ("n_conv_per_stage", "n_conv_per_stage_decoder")}
    blocks = [1, 3, 4, 6, 6, 6][:n]
    return {
        PLAIN: lambda: PlainConvUNet(**kw),
        "resenc": lambda: ResidualEncoderUNet(**resenc, n_blocks_per_stage=blocks,
                                              n_conv_per_stage_decoder=[1] * (n - 1)),
        "seed": lambda: seed_reference_unet(**kw),
        OURS: lambda: MBTFEUNet(**kw),
        "channels-last": lambda: MBTFEUNet(**kw, channels_last=True),
        "mbtfe-only": lambda: MBTFEUNet(**kw, eab_stages=0),
        "eab-only": lambda: MBTFEUNet(**kw, mbtfe_stages=[]),
    }


def InitWeights(module):  # nnU-Net's initialisation, as in training
    from dynamic_network_architectures.initialization.weight_init import InitWeights_He

    InitWeights_He(1e-2)(module)


def train_step_times(build, patch: int, steps: int, device: torch.device, input_channels: int = 1,
                     warmup: int = 3) -> tuple[list[float], float, float]:
    """(milliseconds of each timed step, peak GiB, parameters in millions)."""
    torch.manual_seed(0)
    net = build().to(device)
    net.apply(InitWeights)
    lm = LabelManager({"background": 0, "a": 1, "b": 2}, regions_class_order=None)
    x = torch.randn(2, input_channels, patch, patch, patch, device=device)
    with torch.no_grad():
        shapes = [o.shape[2:] for o in net(x)]
    targets = [torch.randint(0, 3, (2, 1, *s), device=device).float() for s in shapes]
    loss_fn = with_deep_supervision(build_segmentation_loss("dice_ce", lm, False, False), len(shapes), False)
    opt = build_optimizer("sgd", net, 1e-2, 3e-5)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
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
    params = sum(p.numel() for p in net.parameters()) / 1e6
    del net, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return times, peak, params


def train_step_stats(build, patch: int, steps: int, device: torch.device, input_channels: int = 1,
                     warmup: int = 3) -> tuple[float, float, float]:
    """(median ms per step, peak GiB, parameters in millions)."""
    times, peak, params = train_step_times(build, patch, steps, device, input_channels, warmup)
    return statistics.median(times), peak, params


def memory_counts(build, patch: int) -> tuple[int, int, int]:
    """On the meta device: (planner estimate, conv-output voxels by forward hooks at batch 1, fp32 bytes saved for
    backward at batch 2, each storage once)."""
    with torch.device("meta"):
        net = build()
        conv_voxels = [0]
        handles = [m.register_forward_hook(lambda m, i, o: conv_voxels.__setitem__(0, conv_voxels[0] + o.numel()))
                   for m in net.modules() if isinstance(m, CONVS)]
        net(torch.empty(1, 1, patch, patch, patch))
        for h in handles:
            h.remove()
        storages: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            storages[storage._cdata] = max(storages.get(storage._cdata, 0), storage.nbytes())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            net(torch.empty(2, 1, patch, patch, patch))
        estimate = int(net.compute_conv_feature_map_size([patch] * 3))
    return estimate, conv_voxels[0], sum(storages.values())


def sliding_window_seconds(build, patch: int, volume: int, device: torch.device, runs: int = 3,
                           warmup: int = 1) -> list[float]:
    """nnU-Net's sliding-window prediction of one (1, volume^3) image: seconds of ``runs`` timed predictions after
    ``warmup`` untimed ones."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    torch.manual_seed(0)
    net = build().to(device).eval()
    net.apply(InitWeights)
    net.decoder.deep_supervision = False
    plans = {"dataset_name": "Dataset999_Benchmark", "plans_name": "benchmark",
             "configurations": {"bench": {"patch_size": [patch] * 3, "architecture": {
                 "network_class_name": "unused", "arch_kwargs": {}, "_kw_requires_import": []}}}}
    pm = PlansManager(plans)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=device.type == "cuda", device=device, verbose=False,
                                allow_tqdm=False)
    predictor.manual_initialization(net, pm, pm.get_configuration("bench"), None,
                                    {"labels": {"background": 0, "a": 1, "b": 2}}, "benchmark", None)
    image = torch.randn(1, volume, volume, volume)
    times = []
    for i in range(warmup + runs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        predictor.predict_sliding_window_return_logits(image)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def explicit_arguments(args: argparse.Namespace) -> list[str]:
    """The command-line arguments with every option spelled out, so the recorded command does not depend on the
    defaults of a later version of this script."""
    argv = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--patch", str(args.patch), "--memory-patch",
            str(args.memory_patch), "--volume", str(args.volume), "--inference-runs", str(args.inference_runs),
            "--inference-warmup", str(args.inference_warmup), "--device", args.device,
            "--models", ",".join(args.models)]
    if args.threads is not None:
        argv += ["--threads", str(args.threads)]
    if args.smoke:
        argv.append("--smoke")
    if args.append:
        argv += ["--append", args.append]
    return argv


def parse_arguments(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=MIN_TIMED_STEPS, help=f"timed steps (>= {MIN_TIMED_STEPS})")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps before timing (>= 1)")
    parser.add_argument("--smoke", action="store_true", help="tiny plan (4 stages 8..64, patch 32^3, volume 64^3)")
    parser.add_argument("--patch", type=int, default=None, help="patch edge (default 128, smoke 32)")
    parser.add_argument("--memory-patch", type=int, default=None, help="patch edge of the memory table (default 128, "
                                                                         "smoke 32)")
    parser.add_argument("--volume", type=int, default=None, help="inference volume edge (default 256, smoke 64)")
    parser.add_argument("--inference-runs", type=int, default=3, help="timed sliding-window predictions (>= 1)")
    parser.add_argument("--inference-warmup", type=int, default=1, help="untimed predictions before timing (>= 1)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--models", default=None,
                        help=f"comma-separated subset of {', '.join(MODEL_NAMES)}; {PLAIN} and {OURS} are always "
                             f"included (default: all)")
    parser.add_argument("--append", default=None, help="append the tables to this markdown file")
    args = parser.parse_args(argv)
    if args.steps < MIN_TIMED_STEPS:
        parser.error(f"--steps {args.steps}: a median needs at least {MIN_TIMED_STEPS} timed steps")
    if args.warmup < 1 or args.inference_warmup < 1 or args.inference_runs < 1:
        parser.error("--warmup, --inference-warmup and --inference-runs must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    args.patch = args.patch or (32 if args.smoke else 128)
    args.volume = args.volume or (64 if args.smoke else 256)
    args.memory_patch = args.memory_patch or (32 if args.smoke else 128)
    known = list(models(args.smoke))
    chosen = known if args.models is None else [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in known]
    if unknown:
        parser.error(f"--models: unknown {unknown}; known: {known}")
    args.models = [m for m in known if m in chosen or m in (PLAIN, OURS)]
    return args


def main(argv: Optional[list[str]] = None) -> list[str]:
    args = parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    builds = {name: build for name, build in models(args.smoke).items() if name in args.models}
    kw = plan_kwargs(args.smoke)
    precision = "fp16 autocast + GradScaler" if device.type == "cuda" else "fp32"

    load_before = os.getloadavg()[0]
    rows = {}
    for name, build in builds.items():
        rows[name] = train_step_times(build, args.patch, args.steps, device, warmup=args.warmup)
        logger.info("%s: median %.1f ms", MODEL_NAMES[name], statistics.median(rows[name][0]))
    base_ms, base_peak = statistics.median(rows[PLAIN][0]), rows[PLAIN][1]
    lines = [f"### MBTFE/EAB step time, memory and inference, {datetime.date.today()}, {device_description(device)}, "
             f"torch {torch.__version__}", "",
             f"`{recorded_command(__file__, explicit_arguments(args))}`", "",
             f"Training step: batch 2, patch {args.patch}^3, {precision}, nnU-Net's SGD, {kw['n_stages']}-stage plan "
             f"{kw['features_per_stage']}; {args.warmup} untimed warm-up steps, then {args.steps} timed steps.", "",
             "| model | median ms / step | min | max | x plain | peak GiB | x plain | parameters (M) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, (times, peak, params) in rows.items():
        ms = statistics.median(times)
        memory = f"{peak:.2f} | {peak / base_peak:.2f}" if device.type == "cuda" else "n/a | n/a"
        lines.append(f"| {MODEL_NAMES[name]} | {ms:.1f} | {min(times):.1f} | {max(times):.1f} | {ms / base_ms:.2f} | "
                     f"{memory} | "
                     f"{params:.1f} |")

    counts = {name: memory_counts(build, args.memory_patch) for name, build in models(args.smoke).items()}
    plain_counts = counts[PLAIN]
    lines += ["", f"Memory at patch {args.memory_patch}^3 (meta device, the same on every machine): nnU-Net's planner "
                  f"estimate `compute_conv_feature_map_size`; conv outputs counted by forward hooks on every conv, "
                  f"batch 1; bytes autograd saves for backward, fp32, batch 2.", "",
              "| model | estimate (M voxels) | x plain | conv outputs by hooks (M voxels) | estimate / hooks "
              "| saved for backward (GiB) | x plain |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, (estimate, hooked, saved) in counts.items():
        lines.append(f"| {MODEL_NAMES[name]} | {estimate / 1e6:.1f} | {estimate / plain_counts[0]:.3f} | "
                     f"{hooked / 1e6:.1f} | "
                     f"{estimate / hooked:.3f} | {saved / 2 ** 30:.2f} | {saved / plain_counts[2]:.3f} |")

    lines += ["", f"Sliding-window inference of one {args.volume}^3 volume (nnUNetPredictor, step 0.5, no mirroring), "
                  f"{args.inference_warmup} untimed prediction(s), then {args.inference_runs} timed:", "",
              "| model | median seconds | min | max | x plain |", "| --- | --- | --- | --- | --- |"]
    seconds = {name: sliding_window_seconds(builds[name], args.patch, args.volume, device, args.inference_runs,
                                            args.inference_warmup) for name in (PLAIN, OURS)}
    plain_s = statistics.median(seconds[PLAIN])
    for name, times in seconds.items():
        s = statistics.median(times)
        lines.append(f"| {MODEL_NAMES[name]} | {s:.2f} | {min(times):.2f} | {max(times):.2f} | {s / plain_s:.2f} |")
    lines += ["", f"1-minute load average {load_before:.1f} before the run, {os.getloadavg()[0]:.1f} after."]
    report(lines, args.append)
    return lines


if __name__ == "__main__":
    main()
