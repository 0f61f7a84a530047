import pytest
import torch
import torch.nn.functional as F

from nnunet_mvext.architectures.multiphase_fusion_net import MultiPhaseFusionNet
from nnunet_mvext.architectures.phase_norm import PhaseConditionedNorm
from nnunet_mvext.errors import MVExtError

from test_phase_fusion import _plan


def test_each_phase_of_each_case_gets_its_own_affine_pair():
    """(B*P, C, *S), phase p of case b at b*P + p: y = gamma_p * instance_norm(x) + beta_p."""
    torch.manual_seed(0)
    b, p, c = 2, 3, 4
    norm = PhaseConditionedNorm(c, torch.nn.InstanceNorm3d, p, affine=True, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.arange(1, p + 1).float()[:, None] * torch.linspace(0.5, -1.0, c)[None])
        norm.bias.copy_(10 * torch.arange(p).float()[:, None] + torch.arange(c).float()[None])
    x = torch.randn(b * p, c, 3, 4, 5) * 3 + 1
    y = norm(x)
    for case in range(b):
        for phase in range(p):
            i = case * p + phase
            expected = (F.instance_norm(x[i:i + 1], eps=1e-5) * norm.weight[phase].reshape(1, c, 1, 1, 1)
                        + norm.bias[phase].reshape(1, c, 1, 1, 1))
            torch.testing.assert_close(y[i:i + 1], expected)
    with pytest.raises(ValueError, match="not a multiple of the 3 phases"):
        norm(x[:4])


def _net(**kw):
    name, arch = _plan()
    torch.manual_seed(0)
    return MultiPhaseFusionNet(name, arch, 3, 3, 2, "concat", shared_encoder=True, **kw).eval()


def test_phase_norm_changes_one_phases_features_only_and_the_decoder_keeps_the_plans_norm():
    net = _net(phase_norm=True)
    norms = [m for m in net.encoders[0].modules() if isinstance(m, PhaseConditionedNorm)]
    assert norms and all(n.num_phases == 3 for n in norms)
    assert not any(isinstance(m, PhaseConditionedNorm) for m in net.decoder.stages.modules())
    assert all(type(m.norm) is torch.nn.InstanceNorm3d for m in net.decoder.stages.modules() if hasattr(m, "norm"))
    x = torch.randn(2, 3, 8, 16, 16)
    roi = torch.zeros(2, 1, 8, 16, 16)
    roi[..., 2:6, 4:12, 4:12] = 1
    with torch.no_grad():
        seg, before = net.forward_with_classification(x, roi)
        for n in norms:
            n.weight[1].mul_(-2.0)
            n.bias[1].add_(0.3)
        _, after = net.forward_with_classification(x, roi)
    d = before["embedding"].shape[1] // 3
    torch.testing.assert_close(before["embedding"][:, :d], after["embedding"][:, :d])   # phase 0 unchanged
    torch.testing.assert_close(before["embedding"][:, 2 * d:], after["embedding"][:, 2 * d:])   # phase 2
    assert not torch.allclose(before["embedding"][:, d:2 * d], after["embedding"][:, d:2 * d])
    assert seg[0].shape == (2, 3, 8, 16, 16)
    with torch.no_grad():   # batch 1, as nnU-Net's sliding window: the decoder runs on the fused (B, ...) skips
        assert net(x[:1])[0].shape == (1, 3, 8, 16, 16)


def test_phase_norm_with_identical_affine_pairs_is_the_shared_encoder():
    """Every phase's pair set to the shared encoder's affine parameters: the same segmentation and embedding."""
    plain, conditioned = _net(), _net(phase_norm=True)
    source = plain.state_dict()
    state = {}
    for key, value in conditioned.state_dict().items():
        if key in source and source[key].shape == value.shape:
            state[key] = source[key]
        else:   # encoders.0.<...>.norm.weight (3, C) <- (C,) of the shared encoder; the inner norm has none
            state[key] = source[key].unsqueeze(0).expand_as(value).clone()
    conditioned.load_state_dict(state)
    x = torch.randn(2, 3, 8, 16, 16)
    roi = torch.zeros(2, 1, 8, 16, 16)
    roi[..., 2:6, 4:12, 4:12] = 1
    with torch.no_grad():
        torch.testing.assert_close(plain(x)[0], conditioned(x)[0])
        torch.testing.assert_close(plain.forward_with_classification(x, roi)[1]["embedding"],
                                   conditioned.forward_with_classification(x, roi)[1]["embedding"])


def test_phase_norm_needs_the_shared_encoder():
    name, arch = _plan()
    with pytest.raises(MVExtError, match="'phase_norm' needs 'shared_encoder'"):
        MultiPhaseFusionNet(name, arch, 3, 3, 2, "concat", shared_encoder=False, phase_norm=True)


def test_a_segmentation_checkpoint_starts_every_phases_affine_pair_from_its_norm(tmp_path):
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    from nnunet_mvext.classification.pretrained import load_segmentation_weights

    name, arch = _plan()
    torch.manual_seed(1)
    seg = PlainConvUNet(input_channels=3, num_classes=3, deep_supervision=True, **arch)
    with torch.no_grad():
        for p in seg.parameters():
            p.uniform_(-1, 1)
    torch.save({"network_weights": seg.state_dict()}, tmp_path / "seg.pth")
    net = _net(phase_norm=True)
    lines = load_segmentation_weights(net, str(tmp_path / "seg.pth"))
    source = seg.state_dict()
    norm_keys = [k for k in net.state_dict()
                 if k.startswith("encoders.0.") and k.endswith(("norm.weight", "norm.bias"))]
    assert norm_keys
    for key in norm_keys:
        expected = source["encoder." + key[len("encoders.0."):]]
        torch.testing.assert_close(net.state_dict()[key], expected.unsqueeze(0).expand(3, -1))
    assert "checkpoint tensors without a match" not in "\n".join(lines)


@pytest.mark.parametrize("encoder", ["PlainConvUNet", "ResidualEncoderUNet"])
@pytest.mark.parametrize("k", [1, 2])
def test_partly_shared_encoder_equals_the_shared_one_when_the_phase_stages_are_copies(encoder, k):
    """Stages below k copied from the shared encoder into every phase: the same skips, segmentation and embedding
    as the fully shared encoder (phases folded in the same order); every parameter gets a gradient."""
    name, arch = _plan(encoder)
    torch.manual_seed(0)
    shared = MultiPhaseFusionNet(name, arch, 3, 3, 2, "abaf", shared_encoder=True).eval()
    partly = MultiPhaseFusionNet(name, arch, 3, 3, 2, "abaf", shared_encoder=True, phase_specific_stages=k).eval()
    assert len(partly.encoders) == 3 and all(len(e.stages) == k for e in partly.encoders[1:])
    source = shared.state_dict()
    state = {}
    for key in partly.state_dict():
        parts = key.split(".")
        if parts[0] == "encoders":
            parts[1] = "0"
        state[key] = source[".".join(parts)]
    partly.load_state_dict(state)
    x = torch.randn(2, 3, 8, 16, 16)
    roi = torch.zeros(2, 1, 8, 16, 16)
    roi[..., 2:6, 4:12, 4:12] = 1
    with torch.no_grad():
        for a, b in zip(shared.phase_skips(x), partly.phase_skips(x)):
            torch.testing.assert_close(a, b)
        torch.testing.assert_close(shared(x)[0], partly(x)[0])
    partly.train()
    partly.classification_output = True
    seg, head = partly(x, roi)
    (sum(s.float().mean() for s in seg) + partly.head.loss(head, torch.tensor([0, 1]), None,
                                                            head["has_roi"].float())).backward()
    assert [n for n, p in partly.named_parameters() if p.grad is None] == []


def test_partly_shared_encoder_keeps_the_first_stages_per_phase_and_shares_the_rest():
    name, arch = _plan()
    torch.manual_seed(0)
    net = MultiPhaseFusionNet(name, arch, 3, 3, 2, "concat", shared_encoder=True, phase_specific_stages=1).eval()
    x = torch.randn(1, 3, 8, 16, 16)
    with torch.no_grad():
        before = net.phase_skips(x)
        for p in net.encoders[1].stages[0].parameters():
            p.mul_(-1.5)
        after = net.phase_skips(x)
        # phase 1's own first stage changes phase 1 only, at every stage
        for stage in range(3):
            torch.testing.assert_close(before[stage][:, [0, 2]], after[stage][:, [0, 2]])
            assert not torch.allclose(before[stage][:, 1], after[stage][:, 1])
        for p in net.encoders[0].stages[2].parameters():
            p.add_(0.1)
        deeper = net.phase_skips(x)
    # the shared last stage is one set of weights for all phases
    for phase in range(3):
        assert not torch.allclose(after[2][:, phase], deeper[2][:, phase])
        torch.testing.assert_close(after[1][:, phase], deeper[1][:, phase])


def test_phase_norm_and_phase_specific_stages_are_not_combined():
    name, arch = _plan()
    with pytest.raises(MVExtError, match="'phase_norm' and 'phase_specific_stages' are not combined"):
        MultiPhaseFusionNet(name, arch, 3, 3, 2, "concat", shared_encoder=True, phase_norm=True,
                            phase_specific_stages=1)


@pytest.mark.parametrize("kwargs", [{"shared_encoder": False, "phase_specific_stages": 1},
                                    {"shared_encoder": True, "phase_specific_stages": 3}])
def test_phase_specific_stages_need_a_shared_encoder_and_a_shared_stage(kwargs):
    name, arch = _plan()
    with pytest.raises(MVExtError, match="'phase_specific_stages' .* needs 'shared_encoder' and a value in \\[0, 2\\]"):
        MultiPhaseFusionNet(name, arch, 3, 3, 2, "concat", **kwargs)


def test_a_segmentation_checkpoint_fills_every_phases_own_stages_and_the_shared_ones(tmp_path):
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    from nnunet_mvext.classification.pretrained import load_segmentation_weights

    name, arch = _plan()
    torch.manual_seed(1)
    seg = PlainConvUNet(input_channels=3, num_classes=3, deep_supervision=True, **arch)
    torch.save({"network_weights": seg.state_dict()}, tmp_path / "seg.pth")
    net = MultiPhaseFusionNet(name, arch, 3, 3, 2, "concat", shared_encoder=True, phase_specific_stages=1)
    lines = "\n".join(load_segmentation_weights(net, str(tmp_path / "seg.pth")))
    assert "checkpoint tensors without a match" not in lines
    source, target = seg.state_dict(), net.state_dict()
    first = "stages.0.0.convs.0.conv.weight"
    for p in range(3):   # each phase's first convolution takes its own input channel's slice
        torch.testing.assert_close(target[f"encoders.{p}.{first}"], source[f"encoder.{first}"][:, [p]])
    torch.testing.assert_close(target["encoders.0.stages.2.0.convs.1.conv.weight"],
                               source["encoder.stages.2.0.convs.1.conv.weight"])


@pytest.mark.parametrize("shared", [False, True])
def test_input_contrast_puts_each_phases_lesion_and_ring_intensities_first_in_its_embedding(shared):
    from nnunet_mvext.architectures.lesion_embedding import lesion_contrast

    name, arch = _plan()
    torch.manual_seed(0)
    net = MultiPhaseFusionNet(name, arch, 3, 3, 2, "concat", shared_encoder=shared, input_contrast=True).eval()
    plain = MultiPhaseFusionNet(name, arch, 3, 3, 2, "concat", shared_encoder=shared).eval()
    x = torch.randn(2, 3, 8, 16, 16)
    x[0, 1, 2:6, 4:10, 4:10] += 3.0
    roi = torch.zeros(2, 1, 8, 16, 16)
    roi[0, :, 2:6, 4:10, 4:10] = 1
    roi[1, :, 1:4, 8:14, 2:7] = 1
    with torch.no_grad():
        _, head = net.forward_with_classification(x, roi)
    per_phase = head["embedding"].reshape(2, 3, -1)
    assert per_phase.shape[2] == plain.embedding_dim + 2   # one input channel per phase: [lesion; lesion - ring]
    for p in range(3):
        expected, _ = lesion_contrast(x[:, p:p + 1], roi)
        torch.testing.assert_close(per_phase[:, p, :2], expected)
    assert per_phase[0, 1, 1] > 2.5    # the bright lesion of phase 1 of case 0 against its ring
    with pytest.raises(MVExtError, match="'input_contrast' needs phases of equal size"):
        MultiPhaseFusionNet(name, arch, 3, 3, 2, "concat", phase_channels=[[0, 1], [2]], input_contrast=True)


@pytest.mark.parametrize("encoder", ["PlainConvUNet", "ResidualEncoderUNet"])
def test_classification_encoder_keeps_the_losses_apart_and_leaves_the_segmentation_as_per_phase(encoder):
    """``classification_encoder_width``: the segmentation is that of the per-phase network with the same weights,
    the segmentation loss trains only the phase encoders and the decoder, the classification loss only the
    classification encoder and the head; every parameter gets a gradient from the sum (DDP)."""
    name, arch = _plan(encoder)
    torch.manual_seed(0)
    separate = MultiPhaseFusionNet(name, arch, 3, 3, 2, "abaf", classification_encoder_width=0.5)
    per_phase = MultiPhaseFusionNet(name, arch, 3, 3, 2, "abaf")
    # the plan's stages 1.. (8/16 channels) at half width, from the input pooled by the plan's first (anisotropic)
    # downsampling
    assert list(separate.classification_encoder.output_channels) == [4, 8]
    assert separate.classification_pool == (1, 2, 2)
    own = {k: v for k, v in separate.state_dict().items() if k.startswith(("encoders.", "decoder.", "skip_fusion."))}
    per_phase.load_state_dict(own, strict=False)
    x = torch.randn(2, 3, 8, 16, 16)
    roi = torch.zeros(2, 1, 8, 16, 16)
    roi[..., 2:6, 4:12, 4:12] = 1
    with torch.no_grad():
        for a, b in zip(separate.eval()(x), per_phase.eval()(x)):
            torch.testing.assert_close(a, b)
    separate.train()
    seg, head = separate.forward_with_classification(x, roi)
    seg_loss = sum(s.float().mean() for s in seg)
    cls_loss = separate.head.loss(head, torch.tensor([0, 1]))
    seg_params = [p for n, p in separate.named_parameters() if n.startswith(("encoders.", "decoder.", "skip_fusion."))]
    cls_params = [p for n, p in separate.named_parameters() if n.startswith(("classification_encoder.", "head."))]
    assert len(seg_params) + len(cls_params) == len(list(separate.parameters()))
    seg_grads = torch.autograd.grad(seg_loss, seg_params + cls_params, retain_graph=True, allow_unused=True)
    assert all(g is None for g in seg_grads[len(seg_params):])
    cls_grads = torch.autograd.grad(cls_loss, seg_params + cls_params, retain_graph=True, allow_unused=True)
    assert all(g is None for g in cls_grads[:len(seg_params)])
    assert all(g is not None for g in cls_grads[len(seg_params):])
    (seg_loss + cls_loss).backward()
    assert all(p.grad is not None for p in separate.parameters())


def test_classification_encoder_is_what_the_embedding_pools():
    name, arch = _plan()
    torch.manual_seed(0)
    net = MultiPhaseFusionNet(name, arch, 3, 3, 2, "concat", classification_encoder_width=1.0).eval()
    x = torch.randn(2, 3, 8, 16, 16)
    roi = torch.zeros(2, 1, 8, 16, 16)
    roi[..., 2:6, 4:12, 4:12] = 1
    with torch.no_grad():
        seg_before, before = net.forward_with_classification(x, roi)
        # the classification encoder pooled like a shared encoder: phase p's embedding from its own input channel
        skips = net.classification_encoder(F.avg_pool3d(x[:, 1:2], (1, 2, 2)))
        expected, _ = net.embedding.pooled(skips, roi)
        d = before["embedding"].shape[1] // 3
        torch.testing.assert_close(before["embedding"][:, d:2 * d], expected)
        for enc in net.encoders:
            for p in enc.parameters():
                p.add_(0.1)
        seg_after, after = net.forward_with_classification(x, roi)
    torch.testing.assert_close(before["embedding"], after["embedding"])
    assert not torch.allclose(seg_before[0], seg_after[0])


@pytest.mark.parametrize("kw,message", [({"shared_encoder": True}, "shared_encoder True"),
                                        ({"segmentation": False}, "segmentation False"),
                                        ({"phase_channels": [[0, 1], [2]]}, "phase_channels [[0, 1], [2]]")])
def test_classification_encoder_refuses_what_it_cannot_keep_apart(kw, message):
    name, arch = _plan()
    with pytest.raises(MVExtError, match="'classification_encoder_width' needs one encoder per phase") as e:
        MultiPhaseFusionNet(name, arch, 3, 3, 2, "abaf", classification_encoder_width=0.5, **kw)
    assert message in str(e.value)
