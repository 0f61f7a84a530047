"""Where the fusion networks leave phases out, and where label smoothing acts.

- The multi-view network expands its per-phase mask (B, P) to its branches (B, P * V) phase-major, the branch order
  (``branch = p * V + v``): a missing phase then leaves out every view of that phase and nothing else.
- Phase dropout acts in training only, in both networks; its fallback (every phase of a sample dropped) keeps a
  phase that is present, never one the case lacks.
- Label smoothing is a property of the loss: the heads' outputs and the case probabilities of ``predict-cls`` are
  those of the unsmoothed network, and the loss is PyTorch's smoothed cross-entropy.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nnunet_mvext.architectures.multiphase_fusion_net import MultiPhaseFusionNet, phase_dropout_mask
from nnunet_mvext.architectures.multiview_fusion_net import MultiViewFusionNet
from nnunet_mvext.architectures.phase_fusion_heads import HEADS
from nnunet_mvext.classification.case_prediction import classify_patch

NAME = "dynamic_network_architectures.architectures.unet.PlainConvUNet"


def _plan() -> dict:
    return dict(n_stages=2, features_per_stage=[4, 8], conv_op=nn.Conv3d, kernel_sizes=[[3, 3, 3]] * 2,
                strides=[[1, 1, 1], [2, 2, 2]], n_conv_per_stage=[1, 1], n_conv_per_stage_decoder=[1],
                conv_bias=True, norm_op=nn.InstanceNorm3d, norm_op_kwargs={"affine": True}, dropout_op=None,
                dropout_op_kwargs=None, nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True})


def _patch(batch: int = 2):
    torch.manual_seed(1)
    x = torch.randn(batch, 3, 8, 10, 10)
    roi = torch.zeros(batch, 1, 8, 10, 10)
    roi[..., 3:6, 3:7, 4:7] = 1
    return x, roi


@pytest.mark.parametrize("fusion", ["concat", "abaf", "decision"])
@pytest.mark.parametrize("absent_phase", [0, 2])
def test_a_missing_phase_leaves_out_every_view_of_that_phase_and_only_those(fusion, absent_phase):
    """Three phases, three views. The logits must not depend on the image of the missing phase, and the branches left
    out are exactly that phase's views (phase-major): an expansion in view-major order keeps views of the missing
    phase (and drops views of present ones), so its image moves the logits."""
    torch.manual_seed(0)
    net = MultiViewFusionNet(NAME, _plan(), 3, 3, fusion).eval()
    x, roi = _patch()
    absent = torch.zeros(2, 3, dtype=torch.bool)
    absent[:, absent_phase] = True
    other = x.clone()
    other[:, absent_phase] = torch.randn(2, 8, 10, 10) * 5 + 3
    with torch.no_grad():
        _, a = net.forward_with_classification(x, roi, absent)
        _, b = net.forward_with_classification(other, roi, absent)
        _, c = net.forward_with_classification(other, roi)
    expected = torch.ones(2, 9, dtype=torch.bool)
    expected[:, 3 * absent_phase: 3 * absent_phase + 3] = False
    assert torch.equal(a["present"], expected)
    assert torch.allclose(a["logits"], b["logits"], atol=1e-5)
    assert not torch.allclose(a["logits"], c["logits"], atol=1e-3)  # the image of that phase does matter otherwise


def test_the_multi_view_network_drops_phases_in_training_only():
    """phase_dropout 0.9: in training some (phase, view) branches are left out, always all views of a phase
    together; in evaluation none is, and the output is that of the same network without phase dropout."""
    torch.manual_seed(0)
    net = MultiViewFusionNet(NAME, _plan(), 3, 3, "abaf", phase_dropout=0.9)
    x, roi = _patch(16)
    net.train()
    with torch.no_grad():
        _, trained = net.forward_with_classification(x, roi)
    kept = trained["present"].reshape(16, 3, 3)
    assert (~kept).any()
    assert torch.equal(kept, kept[:, :, :1].expand(-1, -1, 3))               # the views of a phase together
    net.eval()
    with torch.no_grad():
        _, evaluated = net.forward_with_classification(x, roi)
        net.phase_dropout = 0.0
        _, reference = net.forward_with_classification(x, roi)
    assert evaluated["present"].all()
    assert torch.equal(evaluated["logits"], reference["logits"])


def test_the_phase_dropout_fallback_keeps_a_present_phase_never_an_absent_one():
    """Every kept phase dropped (probability 1): the fallback must be one of the sample's present phases. With a
    small non-zero weight on absent phases, a multinomial draw over 150 000 samples of 64 phases picks some."""
    torch.manual_seed(0)
    b, p = 150_000, 64
    present = torch.zeros(b, p, dtype=torch.bool)
    present[torch.arange(b), torch.arange(b) % p] = True
    present[: b // 2, 0] = True                                             # half the samples have two phases
    kept = phase_dropout_mask(present, 1.0)
    assert not (kept & ~present).any()
    assert kept.sum(1).eq(1).all()


@pytest.mark.parametrize("fusion", sorted(HEADS))
def test_label_smoothing_changes_the_loss_and_not_the_predicted_probabilities(fusion):
    """The same head with and without label smoothing: identical outputs, case probabilities the softmax of the
    logits, and the fused logits' loss term is PyTorch's smoothed cross-entropy."""
    torch.manual_seed(0)
    net = MultiPhaseFusionNet(NAME, _plan(), 3, 3, 4, fusion, segmentation=False).eval()
    x, roi = _patch(6)
    y = torch.tensor([0, 1, 2, 3, 1, 0])
    with torch.no_grad():
        _, plain = net.forward_with_classification(x, roi)
        plain_case = classify_patch(net, x[0], roi[0, 0], None, torch.device("cpu"))
        plain_loss = net.head.per_sample_loss(plain, y, None)
        net.head.label_smoothing = 0.3
        _, smoothed = net.forward_with_classification(x, roi)
        smoothed_case = classify_patch(net, x[0], roi[0, 0], None, torch.device("cpu"))
        smoothed_loss = net.head.per_sample_loss(smoothed, y, None)
    assert torch.equal(plain["logits"], smoothed["logits"])
    assert (plain["aux_logits"] is None) == (smoothed["aux_logits"] is None)
    if plain["aux_logits"] is not None:
        assert torch.equal(plain["aux_logits"], smoothed["aux_logits"])
    assert (plain_case["probabilities"] == smoothed_case["probabilities"]).all()
    assert smoothed_case["probabilities"] == pytest.approx(torch.softmax(plain["logits"][0], 0).numpy(), abs=1e-6)
    # the loss minus its fused-logits term is the same auxiliary part with the same smoothing
    fused_plain = F.cross_entropy(plain["logits"], y, reduction="none")
    fused_smoothed = F.cross_entropy(plain["logits"], y, reduction="none", label_smoothing=0.3)
    if plain["aux_logits"] is None:
        assert torch.allclose(smoothed_loss, fused_smoothed, atol=1e-6)
        assert torch.allclose(plain_loss, fused_plain, atol=1e-6)
    assert not torch.allclose(smoothed_loss, plain_loss, atol=1e-3)
