import numpy as np
import pytest
import torch
from nnunetv2.utilities.label_handling.label_handling import LabelManager

from nnunet_mvext.training_setup.segmentation_losses import build_segmentation_loss, deep_supervision_weights


def test_deep_supervision_weights():
    w = deep_supervision_weights(4, is_ddp=False)
    assert w.sum() == pytest.approx(1) and w[-1] == 0
    assert w[:3] == pytest.approx(np.array([1, 0.5, 0.25]) / 1.75)
    w_ddp = deep_supervision_weights(4, is_ddp=True)
    assert w_ddp[-1] > 0 and w_ddp.sum() == pytest.approx(1)
    assert deep_supervision_weights(1, is_ddp=False).tolist() == [1.0]


def _logits_and_target(num_classes=3, ignore=None):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, num_classes, 8, 8, 8, generator=g, requires_grad=True)
    target = torch.randint(0, num_classes, (2, 1, 8, 8, 8), generator=g).float()
    if ignore is not None:
        target[:, :, :4] = ignore
    return logits, target


def test_dice_only_is_dice_ce_minus_ce():
    lm = LabelManager({"background": 0, "a": 1, "b": 2}, regions_class_order=None)
    logits, target = _logits_and_target()
    dice = build_segmentation_loss("dice", lm, batch_dice=False, is_ddp=False)
    dice_ce = build_segmentation_loss("dice_ce", lm, batch_dice=False, is_ddp=False)
    ce = torch.nn.functional.cross_entropy(logits, target[:, 0].long())
    assert dice(logits, target).item() == pytest.approx((dice_ce(logits, target) - ce).item(), abs=1e-6)
    assert -1 <= dice(logits, target).item() <= 0


def test_dice_only_masks_the_ignore_label():
    lm = LabelManager({"background": 0, "a": 1, "b": 2, "ignore": 3}, regions_class_order=None)
    assert lm.ignore_label == 3
    loss = build_segmentation_loss("dice", lm, batch_dice=False, is_ddp=False)
    logits, target = _logits_and_target(ignore=3)
    base = loss(logits, target)
    changed = logits.detach().clone()
    changed[:, :, :4] = torch.randn_like(changed[:, :, :4]) * 10
    assert loss(changed, target).item() == pytest.approx(base.item(), abs=1e-6)
    base.backward()
    assert logits.grad[:, :, :4].abs().max() == 0 and logits.grad[:, :, 4:].abs().max() > 0


def test_dice_only_with_regions():
    lm = LabelManager({"background": 0, "whole": [1, 2], "core": 2}, regions_class_order=[1, 2])
    assert lm.has_regions
    loss = build_segmentation_loss("dice", lm, batch_dice=True, is_ddp=False)
    logits = torch.randn(2, 2, 8, 8, 8, requires_grad=True)
    target = (torch.rand(2, 2, 8, 8, 8) > 0.5).float()
    value = loss(logits, target)
    value.backward()
    assert torch.isfinite(value) and logits.grad.abs().sum() > 0


def test_under_ddp_every_parameter_of_nnunets_unet_gets_a_gradient():
    """DDP without find_unused_parameters needs a gradient for every parameter, the lowest DS head included."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    from nnunet_mvext.training_setup.segmentation_losses import with_deep_supervision

    net = PlainConvUNet(1, 3, [4, 8, 16], torch.nn.Conv3d, 3, [1, 2, 2], 2, 3, [1, 1], conv_bias=True,
                        norm_op=torch.nn.InstanceNorm3d, norm_op_kwargs={"affine": True}, nonlin=torch.nn.LeakyReLU,
                        deep_supervision=True)
    lm = LabelManager({"background": 0, "a": 1, "b": 2}, regions_class_order=None)
    outputs = net(torch.randn(2, 1, 16, 16, 16))
    targets = [torch.randint(0, 3, (2, 1, *o.shape[2:])).float() for o in outputs]
    for is_ddp, expect_all in ((True, True), (False, False)):
        net.zero_grad(set_to_none=True)
        loss = with_deep_supervision(build_segmentation_loss("dice", lm, False, is_ddp), len(outputs), is_ddp)
        loss(net(torch.randn(2, 1, 16, 16, 16)), targets).backward()
        assert all(p.grad is not None for p in net.parameters()) == expect_all
