import copy

import numpy as np
import pytest
import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from timm.optim import Adan

from nnunet_mvext.training_setup.lr_schedules import WarmupScheduler, learning_rate_at
from nnunet_mvext.training_setup.optimizers import build_optimizer


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3, padding=1), torch.nn.InstanceNorm3d(4, affine=True),
                               torch.nn.LeakyReLU(), torch.nn.Conv3d(4, 3, 1))


def _batches(n):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(2, 2, 6, 6, 6, generator=g), torch.randint(0, 3, (2, 6, 6, 6), generator=g))
            for _ in range(n)]


def _step(net, opt, batch):
    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(net(batch[0]), batch[1])
    loss.backward()
    opt.step()


def test_adan_is_timm_foreach_without_decay_on_norms_and_biases():
    net = _net()
    opt = build_optimizer("adan", net, 1e-3, 0.02)
    assert isinstance(opt, Adan)
    assert all(g["foreach"] is True for g in opt.param_groups)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, p in net.named_parameters():
        assert (id(p) in decayed) == (p.ndim > 1), name
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(net.parameters()))


def test_adan_applies_the_first_update():
    """adan-pytorch (nnU-Net's nnUNetTrainerAdan) skips step 1; timm's Adan must move every parameter at once."""
    net = _net()
    before = copy.deepcopy(net.state_dict())
    opt = build_optimizer("adan", net, 1e-3, 0.02)
    _step(net, opt, _batches(1)[0])
    for name, p in net.named_parameters():
        assert not torch.equal(p.detach(), before[name]), name


def test_adan_state_round_trip_reproduces_an_uninterrupted_run():
    batches = _batches(7)
    net_a = _net()
    opt_a = build_optimizer("adan", net_a, 1e-3, 0.02)
    for b in batches[:3]:
        _step(net_a, opt_a, b)
    saved = {"net": copy.deepcopy(net_a.state_dict()), "opt": copy.deepcopy(opt_a.state_dict())}
    for b in batches[3:]:
        _step(net_a, opt_a, b)

    net_b = _net()
    opt_b = build_optimizer("adan", net_b, 1e-3, 0.02)
    net_b.load_state_dict(saved["net"])
    opt_b.load_state_dict(saved["opt"])
    for b in batches[3:]:
        _step(net_b, opt_b, b)
    for (name, pa), pb in zip(net_a.named_parameters(), net_b.parameters()):
        assert torch.equal(pa, pb), name


def test_sgd_is_nnunets_sgd():
    opt = build_optimizer("sgd", _net(), 1e-2, 3e-5)
    g = opt.param_groups[0]
    assert isinstance(opt, torch.optim.SGD) and len(opt.param_groups) == 1
    assert (g["momentum"], g["nesterov"], g["weight_decay"], g["lr"]) == (0.99, True, 3e-5, 1e-2)


def test_poly_without_warmup_equals_nnunets_polylr():
    opt_ours = build_optimizer("sgd", _net(), 1e-2, 0)
    opt_nnunet = build_optimizer("sgd", _net(), 1e-2, 0)
    ours, theirs = WarmupScheduler(opt_ours, 1e-2, 100, 0, "poly"), PolyLRScheduler(opt_nnunet, 1e-2, 100)
    for epoch in range(100):
        ours.step(epoch)
        theirs.step(epoch)
        assert opt_ours.param_groups[0]["lr"] == pytest.approx(opt_nnunet.param_groups[0]["lr"], rel=1e-12)


def test_warmup_then_cosine():
    lrs = [learning_rate_at(e, 1.0, 20, 4, "cosine") for e in range(20)]
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4] == pytest.approx(1.0)
    assert lrs[12] == pytest.approx(0.5)
    assert np.all(np.diff(lrs[4:]) < 0)
