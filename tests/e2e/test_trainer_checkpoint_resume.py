"""Resume through the trainer's own save_checkpoint/load_checkpoint reproduces an uninterrupted Adan run exactly."""

import json

import pytest
import torch

from conftest import run, DATASET_ID

pytestmark = pytest.mark.e2e


def _trainer(workspace, configuration):
    from nnunet_mvext.trainers.adan_trainer import nnUNetTrainerMVAdan

    with open(workspace.plans_file) as f:
        plans = json.load(f)
    plans["continue_training"] = False
    with open(f"{workspace.preprocessed}/{workspace.dataset_name}/dataset.json") as f:
        dataset_json = json.load(f)
    trainer = nnUNetTrainerMVAdan(plans, configuration, 0, dataset_json, torch.device("cpu"))
    trainer.initialize()
    return trainer


def _batches(trainer, n):
    g = torch.Generator().manual_seed(0)
    data = [torch.randn(2, 3, 32, 32, 32, generator=g) for _ in range(n)]
    with torch.no_grad():
        shapes = [o.shape[2:] for o in trainer.network(data[0])]
    return [{"data": d, "target": [torch.randint(0, 3, (2, 1, *s), generator=g).float() for s in shapes]}
            for d in data]


def test_resume_from_checkpoint_equals_uninterrupted(workspace, monkeypatch, tmp_path):
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(key, workspace.env[key])
    run(["nnunet-mvext", "add-config", DATASET_ID, "3d_tiny_cpu", "--name", "3d_tiny_resume"], workspace.env)
    torch.manual_seed(0)
    uninterrupted = _trainer(workspace, "3d_tiny_resume")
    batches = _batches(uninterrupted, 6)
    initial = [p.detach().clone() for p in uninterrupted.network.parameters()]
    uninterrupted.train_step(batches[0])
    not_updated = [name for (name, p), a in zip(uninterrupted.network.named_parameters(), initial)
                   if torch.equal(a, p)]
    # Only the lowest-resolution deep-supervision head (the decoder's first seg layer) has loss weight 0
    # (nnU-Net's rule without DDP; 1e-6 under DDP so that DDP sees a gradient there too).
    assert not_updated == ["decoder.seg_layers.0.weight", "decoder.seg_layers.0.bias"], \
        "the first Adan step must update every parameter that has a gradient"
    for b in batches[1:3]:
        uninterrupted.train_step(b)
    checkpoint = str(tmp_path / "checkpoint.pth")
    uninterrupted.save_checkpoint(checkpoint)
    for b in batches[3:]:
        uninterrupted.train_step(b)

    torch.manual_seed(123)  # a different init: everything must come from the checkpoint
    resumed = _trainer(workspace, "3d_tiny_resume")
    resumed.load_checkpoint(checkpoint)
    for b in batches[3:]:
        resumed.train_step(b)
    for (name, a), b in zip(uninterrupted.network.named_parameters(), resumed.network.parameters()):
        assert torch.equal(a, b), name
