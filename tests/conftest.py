"""Shared fixtures: a tiny nnU-Net workspace built with nnU-Net's real console scripts."""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

import pytest

BIN = os.path.dirname(sys.executable)
DATASET_ID = 600


def script(name: str) -> str:
    path = os.path.join(BIN, name)
    return path if os.path.isfile(path) else shutil.which(name) or name


def run(args, env, timeout=600, check=True):
    """Run a console script; on failure show its output."""
    proc = subprocess.run([script(args[0]), *map(str, args[1:])], env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-4000:]}")
    return proc


@dataclass
class Workspace:
    root: str
    env: dict
    dataset_name: str
    raw: str
    preprocessed: str
    results: str

    @property
    def plans_file(self) -> str:
        return os.path.join(self.preprocessed, self.dataset_name, "nnUNetPlans.json")

    def set_trainer_settings(self, configuration: str, **settings) -> None:
        with open(self.plans_file) as f:
            plans = json.load(f)
        plans["configurations"][configuration].setdefault("trainer_settings", {}).update(settings)
        with open(self.plans_file, "w") as f:
            json.dump(plans, f, indent=2)

    def model_folder(self, trainer: str, configuration: str) -> str:
        return os.path.join(self.results, self.dataset_name, f"{trainer}__nnUNetPlans__{configuration}")


def child_env(root: str) -> dict:
    """A user's fresh shell: only nnU-Net's three folders set, nnUNet_extTrainer not set."""
    env = {k: v for k, v in os.environ.items() if k not in ("nnUNet_extTrainer", "NNUNET_MVEXT_NO_AUTOREGISTER")}
    env.update({"nnUNet_raw": os.path.join(root, "raw"), "nnUNet_preprocessed": os.path.join(root, "pre"),
                "nnUNet_results": os.path.join(root, "results"),
                # keep a 2-core CI machine responsive: one augmentation worker (0 crashes nnU-Net's planner),
                # one export worker
                "nnUNet_n_proc_DA": "1", "nnUNet_def_n_proc": "1", "nnUNet_compile": "false"})
    return env


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Workspace:
    from nnunet_mvext.synthetic.multiphase import generate_multiphase_dataset

    root = str(tmp_path_factory.mktemp("nnunet"))
    env = child_env(root)
    ds = generate_multiphase_dataset(env["nnUNet_raw"], dataset_id=DATASET_ID, num_train=6, num_test=2,
                                     shape=(32, 32, 32), seed=3)
    run(["nnUNetv2_plan_and_preprocess", "-d", DATASET_ID, "-c", "3d_fullres", "-np", "1"], env)
    run(["nnunet-mvext", "add-config", DATASET_ID, "3d_tiny_cpu"], env)
    return Workspace(root, env, ds.dataset_name, env["nnUNet_raw"], env["nnUNet_preprocessed"],
                     env["nnUNet_results"])
