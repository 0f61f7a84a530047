"""Training-step time, peak memory and sliding-window inference time: plain U-Net, ResEnc-M, seed MBTFE+EAB, ours.

nnU-Net's settings: fp16 autocast, GradScaler, nnU-Net's SGD, gradient clipping at 12, Dice+CE with deep
supervision, batch 2, patch 128^3, the 6-stage 3d_fullres plan (features 32..320, strides 1,2,2,2,2,2). Step time is
the median of forward + backward + optimizer step (CUDA-synchronised); peak memory is
``torch.cuda.max_memory_allocated`` over those steps. Inference runs nnU-Net's own
``nnUNetPredictor.predict_sliding_window_return_logits`` (step 0.5, Gaussian weighting, no mirroring) on a 256^3
volume. ``--smoke`` runs a tiny version on the CPU (patch 32^3, features 8..64, 4 stages) to check the script.

    python benchmarks/mbtfe_step_time.py [--steps 20] [--append benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import statistics
import sys
import time

import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from nnunetv2.utilities.label_handling.label_handling import LabelManager

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results_file import report  # noqa: E402
from seed_reference import seed_reference_unet  # noqa: E402

from nnunet_mvext.architectures.mbtfe_unet import MBTFEUNet  # noqa: E402
from nnunet_mvext.optimizers import build_optimizer  # noqa: E402
from nnunet_mvext.segmentation_losses import build_segmentation_loss, with_deep_supervision  # noqa: E402

logger = logging.getLogger("mbtfe_step_time")


def plan_kwargs(smoke: bool) -> dict:
    features = [8, 16, 32, 64] if smoke else [32, 64, 128, 256, 320, 320]
    n = len(features)
    return dict(input_channels=1, n_stages=n, features_per_stage=features, conv_op=torch.nn.Conv3d,
                kernel_sizes=[[3, 3, 3]] * n, strides=[[1, 1, 1]] + [[2, 2, 2]] * (n - 1), n_conv_per_stage=2,
                num_classes=3, n_conv_per_stage_decoder=2, conv_bias=True, norm_op=torch.nn.InstanceNorm3d,
                norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=torch.nn.LeakyReLU,
                nonlin_kwargs={"inplace": True}, deep_supervision=True)


def models(smoke: bool) -> dict:
    kw = plan_kwargs(smoke)
    n = kw["n_stages"]
    resenc = {k: v for k, v in kw.items() if k not in ("n_conv_per_stage", "n_conv_per_stage_decoder")}
    blocks = [1, 3, 4, 6, 6, 6][:n]
    return {
        "plain PlainConvUNet": lambda: PlainConvUNet(**kw),
        "ResEnc-M (ResidualEncoderUNet)": lambda: ResidualEncoderUNet(**resenc, n_blocks_per_stage=blocks,
                                                                      n_conv_per_stage_decoder=[1] * (n - 1)),
        "seed MBTFE+EAB (reference)": lambda: seed_reference_unet(**kw),
        "ours (MBTFEUNet defaults)": lambda: MBTFEUNet(**kw),
        "ours, channels_last": lambda: MBTFEUNet(**kw, channels_last=True),
        "ours, MBTFE only": lambda: MBTFEUNet(**kw, eab_stages=0),
        "ours, EAB only": lambda: MBTFEUNet(**kw, mbtfe_stages=[]),
    }


def train_step_stats(build, patch: int, steps: int, device: torch.device,
                     input_channels: int = 1) -> tuple[float, float, float]:
    """(median ms per step, peak GiB, parameters in millions)."""
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
    for i in range(steps + 3):
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
        if i >= 3:
            times.append((time.perf_counter() - start) * 1000)
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda" else float("nan")
    params = sum(p.numel() for p in net.parameters()) / 1e6
    del net, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return statistics.median(times), peak, params


def InitWeights(module):  # noqa: N802 - nnU-Net's initialisation, as in training
    from dynamic_network_architectures.initialization.weight_init import InitWeights_He

    InitWeights_He(1e-2)(module)


def sliding_window_seconds(build, patch: int, volume: int, device: torch.device) -> float:
    """nnU-Net's sliding-window prediction of one (1, volume^3) image; median of 3 runs."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    net = build().to(device).eval()
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
    for _ in range(3):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        predictor.predict_sliding_window_return_logits(image)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="tiny CPU-sized run that only checks the script")
    parser.add_argument("--patch", type=int, default=None, help="override the patch edge (default 128, smoke 32)")
    parser.add_argument("--volume", type=int, default=None, help="override the inference volume edge")
    parser.add_argument("--append", default=None, help="append the tables to this markdown file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    patch, volume = (32, 64) if args.smoke else (128, 256)
    patch, volume = args.patch or patch, args.volume or volume

    rows = []
    for name, build in models(args.smoke).items():
        ms, peak, params = train_step_stats(build, patch, args.steps, device)
        rows.append((name, ms, peak, params))
        logger.info("%s: %.1f ms, %.2f GiB, %.1f M parameters", name, ms, peak, params)
    base_ms, base_peak = rows[0][1], rows[0][2]
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    lines = [f"### MBTFE/EAB step time and memory, {datetime.date.today()}, {device_name}, torch {torch.__version__}",
             "", f"`python benchmarks/mbtfe_step_time.py {' '.join(sys.argv[1:])}`: "
                 f"batch 2, patch {patch}^3, {'fp16 autocast + GradScaler, ' if device.type == 'cuda' else 'fp32, '}"
                 f"SGD step, {plan_kwargs(args.smoke)['n_stages']}-stage plan "
                 f"{plan_kwargs(args.smoke)['features_per_stage']}.", "",
             "| model | ms / step | x plain | peak GiB | x plain | parameters (M) |", "| --- | --- | --- | --- | --- | --- |"]
    for name, ms, peak, params in rows:
        memory = f"{peak:.2f} | {peak / base_peak:.2f}" if device.type == "cuda" else "n/a | n/a"
        lines.append(f"| {name} | {ms:.1f} | {ms / base_ms:.2f} | {memory} | {params:.1f} |")
    lines += ["", f"Sliding-window inference of one {volume}^3 volume (nnUNetPredictor, step 0.5, no mirroring):", "",
              "| model | seconds | x plain |", "| --- | --- | --- |"]
    builds = models(args.smoke)
    plain_s = sliding_window_seconds(builds["plain PlainConvUNet"], patch, volume, device)
    ours_s = sliding_window_seconds(builds["ours (MBTFEUNet defaults)"], patch, volume, device)
    lines += [f"| plain PlainConvUNet | {plain_s:.2f} | 1.00 |",
              f"| ours (MBTFEUNet defaults) | {ours_s:.2f} | {ours_s / plain_s:.2f} |"]
    report(lines, args.append)


if __name__ == "__main__":
    main()
