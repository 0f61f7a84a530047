"""Median optimizer-step time of nnU-Net's SGD, timm's foreach Adan (ours) and adan-pytorch (nnU-Net's Adan).

The network is nnU-Net's 6-stage 3d_fullres ``PlainConvUNet`` (features 32..320, 31.2 M parameters), on the GPU
when there is one, else on the CPU; ``--smoke`` uses a 4-stage 8..64 version so the script finishes in seconds. Gradients are filled with
fixed random values, so only ``optimizer.step()`` is timed (CUDA-synchronised). ``adan-pytorch`` is measured only if
it is installed (``pip install adan-pytorch``).

    python benchmarks/optimizer_step_time.py [--steps 50] [--append benchmarks/RESULTS.md]
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
from dynamic_network_architectures.architectures.unet import PlainConvUNet

from nnunet_mvext.optimizers import build_optimizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results_file import report  # noqa: E402

logger = logging.getLogger("optimizer_step_time")


def nnunet_3d_fullres_unet(small: bool) -> torch.nn.Module:
    features = [8, 16, 32, 64] if small else [32, 64, 128, 256, 320, 320]
    n = len(features)
    return PlainConvUNet(1, n, features, torch.nn.Conv3d, 3, [1] + [2] * (n - 1), 2, 3, [2] * (n - 1),
                         conv_bias=True, norm_op=torch.nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
                         nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=True)


def optimizers(network: torch.nn.Module) -> dict:
    found = {"nnU-Net SGD (momentum 0.99, Nesterov)": build_optimizer("sgd", network, 1e-2, 3e-5),
             "timm Adan, foreach (nnUNetTrainerMVAdan)": build_optimizer("adan", network, 1e-3, 2e-2)}
    try:
        from adan_pytorch import Adan as AdanPytorch

        found["adan-pytorch (nnU-Net's nnUNetTrainerAdan)"] = AdanPytorch(network.parameters(), lr=1e-3,
                                                                          weight_decay=3e-5)
    except ImportError:
        logger.info("adan-pytorch not installed: skipped")
    return found


def time_steps(network: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: int, device: torch.device) -> float:
    g = torch.Generator(device="cpu").manual_seed(0)
    for p in network.parameters():
        p.grad = (torch.randn(p.shape, generator=g) * 1e-3).to(device)
    times = []
    for i in range(steps + 5):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 5:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--smoke", action="store_true", help="a small network instead of 3d_fullres")
    parser.add_argument("--append", default=None, help="append the table to this markdown file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    small = args.smoke
    rows = []
    for name in optimizers(nnunet_3d_fullres_unet(small)):
        network = nnunet_3d_fullres_unet(small).to(device)
        optimizer = optimizers(network)[name]
        rows.append((name, time_steps(network, optimizer, args.steps, device)))
    n_params = sum(p.numel() for p in nnunet_3d_fullres_unet(small).parameters()) / 1e6
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    lines = [f"### Optimizer step time, {datetime.date.today()}, {device_name}, torch {torch.__version__}",
             "", f"`python benchmarks/optimizer_step_time.py{' --smoke' if args.smoke else ''}`; "
                 f"{'4-stage 8..64 smoke network' if small else '6-stage 3d_fullres PlainConvUNet 32..320'} "
                 f"({n_params:.1f} M parameters), median of {args.steps} steps.", "",
             "| optimizer | ms per step |", "| --- | --- |"]
    lines += [f"| {name} | {ms:.2f} |" for name, ms in rows]
    report(lines, args.append)


if __name__ == "__main__":
    main()
