import pytest
import torch
import torch.nn.functional as F

from nnunet_mvext.architectures.multiphase_fusion_net import MultiPhaseFusionNet
from nnunet_mvext.architectures.phase_fusion_heads import ABAFHead, ConcatHead, DSNHead
from nnunet_mvext.errors import MVExtError

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
    beta = torch.softmax(g.mean(2), 1)
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
    head.loss(out, y).backward()
    gate_grad = head.gates[0].weight.grad.abs().sum()
    assert gate_grad > 0


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


@pytest.mark.parametrize("fusion", ["concat", "dsn", "abaf"])
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("encoder", ["PlainConvUNet", "ResidualEncoderUNet"])
def test_every_parameter_gets_a_gradient(fusion, shared, encoder):
    name, kw = _plan(encoder)
    net = MultiPhaseFusionNet(name, kw, 3, 3, K, fusion, shared_encoder=shared, deep_supervision=True)
    x = torch.randn(2, 3, 8, 16, 16)
    net.classification_output = True
    seg, head = net(x)
    (sum(s.float().mean() for s in seg) + net.head.loss(head, torch.tensor([0, 1]))).backward()
    assert [n for n, p in net.named_parameters() if p.grad is None] == []
    net.classification_output = False
    assert [o.shape[1:] for o in net(x)][0] == (3, 8, 16, 16)
    if shared:
        assert len(net.encoders) == 1
    else:
        assert len(net.encoders) == 3


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
    assert head["embedding"].shape == (1, 2 * 16)


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
