"""Shared by the benchmark scripts: log a markdown table and optionally append it to RESULTS.md."""

import logging
from typing import Optional, Sequence

logger = logging.getLogger("benchmarks")


def report(lines: Sequence[str], append: Optional[str]) -> None:
    """Log the table made of ``lines``; append it to ``append`` (a markdown file) when given."""
    table = "\n".join(lines) + "\n"
    logger.info("%s", table)
    if append:
        with open(append, "a") as f:
            f.write("\n" + table)


def recorded_command(script_file: str, argv: Optional[Sequence[str]] = None) -> str:
    """The command that reproduces this run, from the repository root: ``python benchmarks/SCRIPT.py ARGS``."""
    import os
    import shlex
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = os.path.relpath(os.path.abspath(script_file), root)
    return shlex.join(["python", script, *(sys.argv[1:] if argv is None else argv)])


def device_description(device) -> str:
    """The GPU's name, or the CPU's model name and the number of threads torch uses."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = "CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "CPU")
    except OSError:
        pass
    threads = torch.get_num_threads()
    return f"{model}, {threads} thread{'' if threads == 1 else 's'}"


def pipeline_arguments(description: str, num_train: int, num_test: int, shape: tuple):
    """The options shared by the scripts that run nnU-Net's whole pipeline on the synthetic dataset."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--iterations", type=int, default=250)
    parser.add_argument("--num-train", type=int, default=num_train)
    parser.add_argument("--num-test", type=int, default=num_test)
    parser.add_argument("--shape", type=int, nargs=3, default=shape)
    parser.add_argument("--smoke", action="store_true", help="tiny configuration, a few iterations, on the CPU")
    parser.add_argument("--force", action="store_true", help="replace an earlier run in --workdir")
    parser.add_argument("--append", default=None, help="append the table to this markdown file")
    return parser


def pipeline_workspace(args) -> tuple:
    """``(workdir, env, logs)``: a fresh demo-style work directory with nnU-Net's folders and a log folder."""
    import os

    from nnunet_mvext.pipeline import claim_output, nnunet_environment, prepare_workdir

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    workdir = os.path.abspath(args.workdir)
    prepare_workdir(workdir, args.force, owner="a benchmark script")
    env = nnunet_environment(workdir, args.device)
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        claim_output(workdir, name)
    logs = claim_output(workdir, "logs")
    os.makedirs(logs)
    return workdir, env, logs
