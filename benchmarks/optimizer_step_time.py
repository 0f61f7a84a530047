"""Optimizer-step time of nnU-Net's SGD, timm's foreach Adan (ours) and adan-pytorch (nnU-Net's Adan).

The network is nnU-Net's 6-stage 3d_fullres ``PlainConvUNet`` (features 32..320, 31.2 M parameters), on the GPU
when there is one, else on the CPU; ``--smoke`` uses a 4-stage 8..64 version so the script finishes in seconds.
Gradients are filled with fixed random values, so only ``optimizer.step()`` is timed (CUDA-synchronised): first
``--warmup`` untimed steps (lazy state allocation, kernel selection), then ``--steps`` timed ones (at least 10); the
table gives their median, minimum and maximum wall time and, on the CPU, the median process CPU time, which a busy
shared machine inflates much less (run it with ``--threads 1`` there). adan-pytorch comes with the ``bench`` extra
(``pip install -e ".[bench]"``); without it its row says so. With ``--append`` the script appends its table, with
date, device, torch and package versions and the exact command, to a markdown file:

    python benchmarks/optimizer_step_time.py [--steps 20] [--warmup 5] [--device auto] [--threads N] \
        [--append benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import statistics
import sys
import time
from importlib import metadata

import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet

from nnunet_mvext.training_setup.optimizers import build_optimizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results_file import device_description, recorded_command, report

logger = logging.getLogger("optimizer_step_time")

MIN_TIMED_STEPS = 10
ADAN_PYTORCH = "adan-pytorch (nnU-Net's nnUNetTrainerAdan)"


def nnunet_3d_fullres_unet(small: bool) -> torch.nn.Module:
    features = [8, 16, 32, 64] if small else [32, 64, 128, 256, 320, 320]
    n = len(features)
    return PlainConvUNet(1, n, features, torch.nn.Conv3d, 3, [1] + [2] * (n - 1), 2, 3, [2] * (n - 1),
                         conv_bias=True, norm_op=torch.nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
                         nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=True)


def build_optimizers(network: torch.nn.Module) -> dict:
    """Each optimizer under its table name; adan-pytorch's entry is None when the package is not installed."""
    found = {"nnU-Net SGD (momentum 0.99, Nesterov)": lambda: build_optimizer("sgd", network, 1e-2, 3e-5),
             "timm Adan, foreach (nnUNetTrainerMVAdan)": lambda: build_optimizer("adan", network, 1e-3, 2e-2)}
    try:
        from adan_pytorch import Adan as AdanPytorch

        found[ADAN_PYTORCH] = lambda: AdanPytorch(network.parameters(), lr=1e-3, weight_decay=3e-5)
    except ImportError:
        found[ADAN_PYTORCH] = None
    return found


def time_steps(network: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: int, warmup: int,
               device: torch.device) -> tuple[list[float], list[float]]:
    """Wall-clock and process CPU milliseconds of each of ``steps`` timed ``optimizer.step()`` calls after
    ``warmup`` untimed ones. On a shared CPU the process time is what the step itself costs (summed over threads);
    the wall time also holds the time the process waited for a core."""
    g = torch.Generator(device="cpu").manual_seed(0)
    for p in network.parameters():
        p.grad = (torch.randn(p.shape, generator=g) * 1e-3).to(device)
    wall, cpu = [], []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, start_cpu = time.perf_counter(), time.process_time()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            wall.append((time.perf_counter() - start) * 1000)
            cpu.append((time.process_time() - start_cpu) * 1000)
    return wall, cpu


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help=f"timed steps per optimizer (>= {MIN_TIMED_STEPS})")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before timing (>= 1)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--smoke", action="store_true", help="a small network instead of 3d_fullres")
    parser.add_argument("--append", default=None, help="append the table to this markdown file")
    args = parser.parse_args()
    if args.steps < MIN_TIMED_STEPS:
        parser.error(f"--steps {args.steps}: a median needs at least {MIN_TIMED_STEPS} timed steps")
    if args.warmup < 1:
        parser.error(f"--warmup {args.warmup}: at least 1 untimed step (the first step allocates the state)")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads {args.threads}: at least 1")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    else:
        device = torch.device(args.device)
    small = args.smoke
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = []
    for name in build_optimizers(nnunet_3d_fullres_unet(small)):
        network = nnunet_3d_fullres_unet(small).to(device)
        make = build_optimizers(network)[name]
        if make is None:
            logger.info("%s: not installed, skipped (pip install -e \".[bench]\")", name)
            rows.append(f"| {name} | not installed (`pip install -e \".[bench]\"`) | | | |")
            continue
        wall, cpu = time_steps(network, make(), args.steps, args.warmup, device)
        logger.info("%s: median %.2f ms", name, statistics.median(wall))
        cpu_median = f"{statistics.median(cpu):.2f}" if device.type == "cpu" else "n/a"
        rows.append(f"| {name} | {statistics.median(wall):.2f} | {min(wall):.2f} | {max(wall):.2f} | {cpu_median} |")
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    n_params = sum(p.numel() for p in nnunet_3d_fullres_unet(small).parameters()) / 1e6
    network_name = "4-stage 8..64 smoke network" if small else "6-stage 3d_fullres PlainConvUNet 32..320"
    lines = [f"### Optimizer step time, {datetime.date.today()}, {device_description(device)}, "
             f"torch {torch.__version__}",
             "", f"`{recorded_command(__file__)}`", "",
             f"{network_name} ({n_params:.1f} M parameters); {args.warmup} untimed warm-up steps, then "
             f"{args.steps} timed steps per optimizer. timm {package_version('timm')}, adan-pytorch "
             f"{package_version('adan-pytorch')}. 1-minute load average {load_before:.1f} before, {load_after:.1f} "
             f"after (on {os.cpu_count()} logical CPUs).", "",
             "| optimizer | median wall ms per step | min | max | median process CPU ms per step |",
             "| --- | --- | --- | --- | --- |", *rows]
    report(lines, args.append)


if __name__ == "__main__":
    main()
