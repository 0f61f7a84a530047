import numpy as np
import pytest
import torch

from nnunet_mvext.architectures.lesion_embedding import MAX_EMBEDDING_DIM, LesionEmbedding, lesion_contrast
from nnunet_mvext.architectures.multiphase_fusion_net import MultiPhaseFusionNet, phase_dropout_mask
from nnunet_mvext.architectures.phase_fusion_heads import ABAFHead, ConcatHead, DecisionHead, DSNHead


def _features_and_lesion():
    """One channel: 10 inside a 2^3 lesion, 4 on the one-voxel ring around it, 1 elsewhere (8^3 stage, 8^3 mask)."""
    f = torch.ones(1, 1, 8, 8, 8)
    f[..., 2:6, 2:6, 2:6] = 4.0
    f[..., 3:5, 3:5, 3:5] = 10.0
    roi = torch.zeros(1, 1, 8, 8, 8)
    roi[..., 3:5, 3:5, 3:5] = 1
    return f, roi


def test_the_contrast_compares_the_lesion_with_a_ring_around_it():
    f, roi = _features_and_lesion()
    e, has_roi = lesion_contrast(f, roi, "ring")
    assert has_roi.tolist() == [True]
    assert e.shape == (1, 2)
    assert float(e[0, 0]) == pytest.approx(10.0)            # lesion mean
    assert float(e[0, 1]) == pytest.approx(10.0 - 4.0)      # minus the ring's mean (4), not the patch's


def test_the_patch_context_compares_the_lesion_with_the_patch_mean():
    f, roi = _features_and_lesion()
    e, _ = lesion_contrast(f, roi, "patch")
    assert float(e[0, 1]) == pytest.approx(10.0 - float(f.mean()))


def test_an_empty_region_gets_the_global_mean_and_zero_contrast():
    f, _ = _features_and_lesion()
    e, has_roi = lesion_contrast(f, torch.zeros(1, 1, 8, 8, 8), "ring")
    assert has_roi.tolist() == [False]
    assert float(e[0, 0]) == pytest.approx(float(f.mean()))
    assert float(e[0, 1]) == 0.0


def test_a_one_voxel_lesion_at_a_coarse_stage_is_pooled_in_fp32():
    """At stride 32 a one-voxel lesion weighs 1/32^3 = 3e-5 of a bottleneck voxel: subnormal in fp16."""
    f = torch.randn(1, 4, 2, 2, 2, dtype=torch.float16)
    roi = torch.zeros(1, 1, 64, 64, 64, dtype=torch.float16)
    roi[0, 0, 5, 5, 5] = 1
    e, has_roi = lesion_contrast(f, roi, "ring")
    assert has_roi.tolist() == [True]
    assert e.dtype == torch.float32
    assert torch.allclose(e[0, :4], f[0, :, 0, 0, 0].float())


def test_every_stage_enters_and_a_projection_is_added_only_beyond_the_limit():
    small = LesionEmbedding([4, 8, 16], num_branches=3)
    assert small.dim == 2 * 28 and small.projections is None
    large = LesionEmbedding([32, 64, 128, 256, 320, 320], num_branches=3)
    assert large.raw_dim == 2 * 1120 and large.dim == MAX_EMBEDDING_DIM and len(large.projections) == 3
    ablation = LesionEmbedding([4, 8, 16], num_branches=3, lesion_mean_only=True)
    assert ablation.dim == 8 + 16


def test_release_2_embedding_ablation_is_the_lesion_mean_of_the_last_two_stages():
    emb = LesionEmbedding([1, 1, 1], num_branches=1, lesion_mean_only=True)
    f, roi = _features_and_lesion()
    skips = [f * 100, f, f * 2]
    pooled, _ = emb.pooled(skips, roi)
    assert pooled.tolist() == [[pytest.approx(10.0), pytest.approx(20.0)]]


def _plan():
    kw = dict(n_stages=3, features_per_stage=[4, 8, 16], conv_op=torch.nn.Conv3d, kernel_sizes=[[3, 3, 3]] * 3,
              strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]], n_conv_per_stage=[1, 1, 1], n_conv_per_stage_decoder=[1, 1],
              conv_bias=True, norm_op=torch.nn.InstanceNorm3d, norm_op_kwargs={"affine": True}, dropout_op=None,
              dropout_op_kwargs=None, nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True})
    return "dynamic_network_architectures.architectures.unet.PlainConvUNet", kw


@pytest.mark.parametrize("fusion", ["concat", "dsn", "abaf", "decision"])
def test_an_absent_phase_does_not_change_the_prediction_whatever_its_image(fusion):
    name, kw = _plan()
    torch.manual_seed(0)
    net = MultiPhaseFusionNet(name, kw, 3, 3, 4, fusion, segmentation=False).eval()
    x = torch.randn(2, 3, 16, 16, 16)
    roi = torch.zeros(2, 1, 16, 16, 16)
    roi[..., 5:11, 5:11, 5:11] = 1
    absent = torch.tensor([[False, True, False], [False, True, False]])
    _, a = net.forward_with_classification(x, roi, absent)
    y = x.clone()
    y[:, 1] = torch.randn(2, 16, 16, 16) * 5
    _, b = net.forward_with_classification(y, roi, absent)
    assert torch.allclose(a["logits"], b["logits"], atol=1e-5)
    _, c = net.forward_with_classification(y, roi)
    assert not torch.allclose(a["logits"], c["logits"], atol=1e-3)
    if a["beta"] is not None:
        assert torch.all(a["beta"][:, 1] == 0)
        assert torch.allclose(a["beta"].sum(1), torch.ones(2))


def test_phase_dropout_drops_phases_at_the_rate_and_keeps_one_per_sample():
    torch.manual_seed(0)
    present = torch.ones(20000, 3, dtype=torch.bool)
    kept = phase_dropout_mask(present, 0.3)
    assert kept.any(1).all()
    # drop rate 0.3 per phase; samples that lost all three get one back: 1 - 0.7 - 0.3^3 / 3 = 0.291
    assert abs(1 - kept.float().mean().item() - (0.3 - 0.3 ** 3 / 3)) < 0.01
    partial = torch.tensor([[True, False, False]] * 100)
    assert torch.equal(phase_dropout_mask(partial, 0.9), partial)  # a sample's only phase is never dropped
    assert torch.equal(phase_dropout_mask(present, 0.0), present)


def test_phase_dropout_acts_in_training_only():
    name, kw = _plan()
    torch.manual_seed(0)
    net = MultiPhaseFusionNet(name, kw, 3, 3, 2, "abaf", segmentation=False, phase_dropout=0.9)
    x = torch.randn(64, 3, 8, 8, 8)
    roi = torch.ones(64, 1, 8, 8, 8)
    net.train()
    _, head = net.forward_with_classification(x, roi)
    assert (~head["present"]).any()
    assert (head["beta"][~head["present"]] == 0).all()
    net.eval()
    _, head = net.forward_with_classification(x, roi)
    assert head["present"].all()


@pytest.mark.parametrize("head_class", [ConcatHead, DSNHead, ABAFHead, DecisionHead])
def test_label_smoothing_raises_the_loss_of_a_confident_correct_prediction(head_class):
    torch.manual_seed(0)
    head = head_class(3, 6, 4)
    f = torch.randn(8, 3, 6)
    y = torch.zeros(8, dtype=torch.long)
    out = head(f)
    out["logits"] = torch.tensor([[20.0, 0, 0, 0]] * 8)
    if out["aux_logits"] is not None:
        out["aux_logits"] = torch.tensor([[[20.0, 0, 0, 0]] * 3] * 8)
    plain = head.loss(out, y).item()
    head.label_smoothing = 0.1
    assert head.loss(out, y).item() > plain + 0.5


def test_the_aux_losses_average_over_present_phases_only():
    torch.manual_seed(0)
    head = DSNHead(3, 6, 2)
    f = torch.randn(4, 3, 6)
    y = torch.zeros(4, dtype=torch.long)
    present = torch.tensor([[True, True, False]] * 4)
    out = head(f * present.unsqueeze(2), present)
    out["aux_logits"] = out["aux_logits"].clone()
    out["aux_logits"][:, 2] = torch.tensor([-50.0, 50.0])  # a huge loss on the absent phase must not count
    assert float(head.loss(out, y)) < 10


def test_masked_roi_is_per_sample_in_a_batch():
    """Each sample's embedding equals the embedding of that sample alone with its own mask."""
    name, kw = _plan()
    torch.manual_seed(0)
    net = MultiPhaseFusionNet(name, kw, 3, 3, 2, "concat", segmentation=False).eval()
    x = torch.randn(2, 3, 16, 16, 16)
    roi = torch.zeros(2, 1, 16, 16, 16)
    roi[0, :, 2:6, 2:6, 2:6] = 1
    roi[1, :, 9:15, 9:15, 9:15] = 1
    _, both = net.forward_with_classification(x, roi)
    for i in range(2):
        _, one = net.forward_with_classification(x[i:i + 1], roi[i:i + 1])
        assert torch.allclose(both["embedding"][i], one["embedding"][0], atol=1e-5)


def test_embedding_values_are_finite_for_a_lesion_filling_the_patch():
    emb = LesionEmbedding([2], num_branches=1)
    f = torch.randn(1, 2, 4, 4, 4)
    pooled, has_roi = emb.pooled([f], torch.ones(1, 1, 4, 4, 4))
    assert has_roi.all() and np.isfinite(pooled.numpy()).all()
    # no ring inside the patch: the contrast is against the global mean, which equals the lesion mean
    assert torch.allclose(pooled[0, 2:], torch.zeros(2), atol=1e-6)


def test_a_sample_with_every_phase_marked_absent_keeps_them_all():
    name, kw = _plan()
    torch.manual_seed(0)
    net = MultiPhaseFusionNet(name, kw, 3, 3, 2, "abaf", segmentation=False).eval()
    x = torch.randn(1, 3, 8, 8, 8)
    roi = torch.ones(1, 1, 8, 8, 8)
    _, all_absent = net.forward_with_classification(x, roi, torch.ones(1, 3, dtype=torch.bool))
    _, none_absent = net.forward_with_classification(x, roi)
    assert torch.isfinite(all_absent["logits"]).all()
    assert torch.allclose(all_absent["logits"], none_absent["logits"])
