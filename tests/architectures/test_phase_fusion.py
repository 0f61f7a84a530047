import pytest
import torch
import torch.nn.functional as F

from nnunet_mvext.architectures.multiphase_fusion_net import MultiPhaseFusionNet
from nnunet_mvext.architectures.phase_fusion_heads import ABAFHead, ConcatHead, DecisionHead, DSNHead
from nnunet_mvext.errors import MVExtError
from nnunet_mvext.training_setup.segmentation_losses import deep_supervision_weights

B, P, D, K = 4, 3, 6, 2


def _f():
    torch.manual_seed(0)
    return torch.randn(B, P, D)


def test_abaf_beta_is_a_per_sample_softmax():
    head = ABAFHead(P, D, K).eval()
    f = _f()
    out = head(f)
    assert out["beta"].shape == (B, P)
    torch.testing.assert_close(out["beta"].sum(1), torch.ones(B))
    f2 = f.clone()
    f2[2] = torch.randn(P, D) * 10
    out2 = head(f2)
    for i in (0, 1, 3):
        torch.testing.assert_close(out2["beta"][i], out["beta"][i])
    assert not torch.allclose(out2["beta"][2], out["beta"][2])


def test_abaf_prediction_uses_the_attention():
    head = ABAFHead(P, D, K).eval()
    f = _f()
    out = head(f)
    concat = f.flatten(1)
    g = torch.stack([torch.sigmoid(head.gates[p](concat)) * f[:, p] for p in range(P)], 1)
    beta = torch.softmax((g * head.score.weight[0]).sum(2), 1)
    torch.testing.assert_close(out["embedding"], (beta[:, :, None] * g).flatten(1))
    torch.testing.assert_close(out["logits"], head.classifier((beta[:, :, None] * g).flatten(1)))


@pytest.mark.parametrize("detach", [True, False])
def test_abaf_loss_matches_hand_computation(detach):
    head = ABAFHead(P, D, K, detach_beta=detach).eval()
    f, y = _f(), torch.tensor([0, 1, 1, 0])
    out = head(f)
    by_hand = sum(F.cross_entropy(out["logits"][b:b + 1], y[b:b + 1]) +
                  sum(out["beta"][b, p] * F.cross_entropy(out["aux_logits"][b:b + 1, p], y[b:b + 1])
                      for p in range(P)) for b in range(B)) / B
    torch.testing.assert_close(head.loss(out, y), by_hand)


def _gate_and_score_grads(head, y):
    head.zero_grad()
    out = head(_f())
    (head.loss(out, y) - F.cross_entropy(out["logits"], y)).backward()  # the loss's auxiliary term alone
    term = [head.gates[0].weight.grad.clone(), head.score.weight.grad]
    head.zero_grad()
    out = head(_f())
    (out["beta"].detach() * torch.stack([F.cross_entropy(out["aux_logits"][:, p], y, reduction="none")
                                         for p in range(P)], 1)).sum(1).mean().backward()
    return term, head.gates[0].weight.grad.clone()


@pytest.mark.parametrize("detach", [True, False])
def test_abaf_detach_beta_controls_the_auxiliary_gradient_through_beta(detach):
    """Detached: the auxiliary term reaches the gates only through aux_p(g_p) and the scoring vector not at all."""
    torch.manual_seed(1)
    head = ABAFHead(P, D, K, detach_beta=detach).eval()
    y = torch.tensor([0, 1, 1, 0])
    (gates, score), gates_without_beta = _gate_and_score_grads(head, y)
    if detach:
        assert score is None or float(score.abs().sum()) == 0.0
        torch.testing.assert_close(gates, gates_without_beta)
    else:
        assert float(score.abs().sum()) > 0
        assert not torch.allclose(gates, gates_without_beta)


def test_abaf_scoring_can_reach_a_near_one_hot_beta():
    head = ABAFHead(P, D, K).eval()
    f = torch.rand(B, P, D)
    f[:, 1] += 3.0
    with torch.no_grad():
        head.score.weight.mul_(200.0)
    with torch.no_grad():
        assert float(head(f)["beta"][:, 1].min()) > 0.95


def test_decision_head_fuses_log_probabilities_with_global_weights():
    head = DecisionHead(P, D, K).eval()
    with torch.no_grad():
        head.phase_logits.copy_(torch.tensor([0.0, 1.0, -1.0]))
    f, y = _f(), torch.tensor([0, 1, 1, 0])
    out = head(f)
    w = torch.softmax(head.phase_logits, 0)
    expected = sum(w[p] * torch.log_softmax(head.aux[p](f[:, p]), 1) for p in range(P))
    torch.testing.assert_close(out["logits"], expected)
    torch.testing.assert_close(out["beta"], w.expand(B, P))
    aux = torch.stack([F.cross_entropy(out["aux_logits"][:, p], y) for p in range(P)]).mean()
    torch.testing.assert_close(head.loss(out, y), F.cross_entropy(out["logits"], y) + aux)


@pytest.mark.parametrize("head_class", [ConcatHead, DSNHead, ABAFHead, DecisionHead])
def test_sample_weights_leave_samples_without_a_region_out_of_the_loss(head_class):
    """Every head: the weighted loss is the mean of the per-sample losses of the weighted samples, each of which is the
    sample's own loss alone (a head that ignored the weights would average all four)."""
    head = head_class(P, D, K).eval()
    f, y = _f(), torch.tensor([0, 1, 1, 1])
    out = head(f)
    alone = [head.loss(head(f[b:b + 1]), y[b:b + 1]) for b in range(B)]
    weighted = head.loss(out, y, None, torch.tensor([1.0, 0.0, 1.0, 0.0]))
    torch.testing.assert_close(weighted, (alone[0] + alone[2]) / 2)
    assert not torch.allclose(weighted, sum(alone) / B)
    zero = head.loss(out, y, None, torch.zeros(4))
    assert float(zero.detach()) == 0.0 and zero.requires_grad


def test_dsn_default_weight_makes_it_abaf_with_uniform_beta():
    head = DSNHead(P, D, K).eval()
    assert head.dsn_lambda == 1.0
    f, y = _f(), torch.tensor([0, 1, 1, 0])
    out = head(f)
    uniform = sum(F.cross_entropy(out["aux_logits"][:, p], y) / P for p in range(P))
    torch.testing.assert_close(head.loss(out, y), F.cross_entropy(out["logits"], y) + uniform)


def test_dsn_loss_matches_hand_computation():
    head = DSNHead(P, D, K, dsn_lambda=0.3).eval()
    f, y = _f(), torch.tensor([0, 1, 1, 0])
    out = head(f)
    aux = torch.stack([F.cross_entropy(out["aux_logits"][:, p], y) for p in range(P)]).mean()
    torch.testing.assert_close(head.loss(out, y), F.cross_entropy(out["logits"], y) + 0.3 * aux)


def test_concat_loss_is_plain_cross_entropy_on_logits_with_class_weights():
    head = ConcatHead(P, D, K).eval()
    f, y = _f(), torch.tensor([0, 1, 1, 1])
    out = head(f)
    w = torch.tensor([3.0, 1.0])
    per = F.cross_entropy(out["logits"], y, weight=w, reduction="none")
    torch.testing.assert_close(head.loss(out, y, w), per.mean())


def _plan(encoder="PlainConvUNet"):
    kw = dict(n_stages=3, features_per_stage=[4, 8, 16], conv_op=torch.nn.Conv3d, kernel_sizes=[[3, 3, 3]] * 3,
              strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]], n_conv_per_stage_decoder=[1, 1], conv_bias=True,
              norm_op=torch.nn.InstanceNorm3d, norm_op_kwargs={"affine": True}, dropout_op=None,
              dropout_op_kwargs=None, nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True})
    if encoder == "PlainConvUNet":
        kw["n_conv_per_stage"] = [2, 2, 2]
    else:
        kw["n_blocks_per_stage"] = [1, 1, 1]
    return f"dynamic_network_architectures.architectures.unet.{encoder}", kw


@pytest.mark.parametrize("fusion", ["concat", "dsn", "abaf", "decision"])
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("encoder", ["PlainConvUNet", "ResidualEncoderUNet"])
def test_every_parameter_gets_a_gradient_under_nnunets_deep_supervision_weights(fusion, shared, encoder):
    """The DDP weights of nnU-Net (lowest output 1e-6), a lesion mask, one sample without a lesion."""
    name, kw = _plan(encoder)
    net = MultiPhaseFusionNet(name, kw, 3, 3, K, fusion, shared_encoder=shared, deep_supervision=True)
    x = torch.randn(2, 3, 8, 16, 16)
    roi = torch.zeros(2, 1, 8, 16, 16)
    roi[0, :, 2:6, 4:10, 4:10] = 1
    net.classification_output = True
    seg, head = net(x, roi)
    assert head["has_roi"].tolist() == [True, False]
    weights = deep_supervision_weights(len(seg), is_ddp=True)
    seg_loss = sum(w * s.float().mean() for w, s in zip(weights, seg))
    (seg_loss + net.head.loss(head, torch.tensor([0, 1]), None, head["has_roi"].float())).backward()
    assert [n for n, p in net.named_parameters() if p.grad is None] == []
    net.classification_output = False
    assert [o.shape[1:] for o in net(x)][0] == (3, 8, 16, 16)
    if shared:
        assert len(net.encoders) == 1
    else:
        assert len(net.encoders) == 3


def test_the_embedding_depends_on_the_lesion_not_on_the_rest_of_the_patch():
    name, kw = _plan()
    net = MultiPhaseFusionNet(name, kw, 3, 3, K, "concat").eval()
    x = torch.randn(1, 3, 16, 32, 32)
    roi = torch.zeros(1, 1, 16, 32, 32)
    roi[..., 4:12, 8:24, 8:24] = 1
    _, a = net.forward_with_classification(x, roi)
    _, b = net.forward_with_classification(x, 1 - roi)
    assert not torch.allclose(a["embedding"], b["embedding"])
    # the embedding has [lesion mean; lesion - ring] of every stage per phase (4 + 8 + 16 channels)
    assert a["embedding"].shape == (1, 3 * 2 * (4 + 8 + 16))


@pytest.mark.parametrize("shared", [False, True])
def test_each_sample_is_pooled_over_its_own_mask_in_a_batch(shared):
    """B = 3 samples with different masks (one empty), P = 3 phases: each sample's embedding and has_roi in the batch
    are those of the sample alone with its own mask (a mask paired with another sample's phases would differ)."""
    name, kw = _plan()
    torch.manual_seed(0)
    net = MultiPhaseFusionNet(name, kw, 3, 3, K, "concat", shared_encoder=shared).eval()
    x = torch.randn(3, 3, 8, 16, 16)
    roi = torch.zeros(3, 1, 8, 16, 16)
    roi[0, :, 0:3, 0:5, 0:5] = 1
    roi[2, :, 4:8, 9:16, 6:14] = 1
    with torch.no_grad():
        _, batch = net.forward_with_classification(x, roi)
        alone = [net.forward_with_classification(x[b:b + 1], roi[b:b + 1])[1] for b in range(3)]
    assert batch["has_roi"].tolist() == [True, False, True]
    for b in range(3):
        torch.testing.assert_close(batch["embedding"][b], alone[b]["embedding"][0])
        assert alone[b]["has_roi"].tolist() == [b != 1]


def test_shared_encoder_folds_phases_into_the_batch_calling_the_encoder_once():
    name, kw = _plan()
    net = MultiPhaseFusionNet(name, kw, 3, 3, K, "abaf", shared_encoder=True)
    calls = []
    net.encoders[0].register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    net(torch.randn(2, 3, 8, 16, 16))
    assert calls == [torch.Size([6, 1, 8, 16, 16])]


@pytest.mark.parametrize("groups", [[[0, 0]], [[0], [3]], [[0], [0, 1, 2]]])
def test_bad_phase_channels_are_refused(groups):
    name, kw = _plan()
    with pytest.raises(MVExtError, match="phase_channels"):
        MultiPhaseFusionNet(name, kw, 3, 3, K, "abaf", phase_channels=groups)


def test_single_phase_model_uses_only_its_channel():
    name, kw = _plan()
    net = MultiPhaseFusionNet(name, kw, 3, 3, K, "concat", phase_channels=[[2]]).eval()
    net.classification_output = True
    x = torch.randn(1, 3, 8, 16, 16)
    _, a = net(x)
    x[:, :2] = torch.randn(1, 2, 8, 16, 16)
    _, b = net(x)
    torch.testing.assert_close(a["logits"], b["logits"])


def test_grouped_phases():
    name, kw = _plan()
    net = MultiPhaseFusionNet(name, kw, 4, 3, K, "concat", phase_channels=[[0, 1], [2, 3]])
    net.classification_output = True
    _, head = net(torch.randn(1, 4, 8, 16, 16))
    assert head["embedding"].shape == (1, 2 * 2 * (4 + 8 + 16))


def test_classification_only_network_has_no_decoder_and_says_so():
    name, kw = _plan()
    net = MultiPhaseFusionNet(name, kw, 3, 3, K, "dsn", segmentation=False)
    assert net.decoder is None and net.skip_fusion is None
    net.classification_output = True
    seg, head = net(torch.randn(2, 3, 8, 16, 16))
    assert seg is None
    net.head.loss(head, torch.tensor([0, 1])).backward()
    assert [n for n, p in net.named_parameters() if p.grad is None] == []
    net.classification_output = False
    with pytest.raises(MVExtError, match="'segmentation': false"):
        net(torch.randn(1, 3, 8, 16, 16))
