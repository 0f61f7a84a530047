import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet

from nnunet_mvext.architectures.mbtfe_knobs import SEED_KNOBS
from nnunet_mvext.architectures.mbtfe_unet import MBTFEUNet
from nnunet_mvext.errors import MVExtError


def plan_kwargs(n_stages=4, dim=3, strides=None, kernels=None, features=None):
    conv = torch.nn.Conv3d if dim == 3 else torch.nn.Conv2d
    norm = torch.nn.InstanceNorm3d if dim == 3 else torch.nn.InstanceNorm2d
    return dict(input_channels=2, n_stages=n_stages,
                features_per_stage=features or [4 * 2 ** i for i in range(n_stages)], conv_op=conv,
                kernel_sizes=kernels or [[3] * dim] * n_stages,
                strides=strides or [[1] * dim] + [[2] * dim] * (n_stages - 1), n_conv_per_stage=2, num_classes=3,
                n_conv_per_stage_decoder=1, conv_bias=True, norm_op=norm, norm_op_kwargs={"eps": 1e-5, "affine": True},
                nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=True)


CASES = {
    "2d-5-stages": (plan_kwargs(5, dim=2), (1, 2, 32, 32)),
    "3d-4-stages": (plan_kwargs(4), (2, 2, 16, 16, 16)),
    "3d-5-stages": (plan_kwargs(5), (1, 2, 32, 32, 32)),
    "2d-7-stages": (plan_kwargs(7, dim=2, features=[4, 4, 8, 8, 8, 8, 8]), (1, 2, 128, 128)),
    "3d-anisotropic": (plan_kwargs(5, strides=[[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2]],
                                   kernels=[[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]), (1, 2, 8, 32, 32)),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("layout", ["default", "seed"])
def test_outputs_match_plain_unet_and_every_parameter_gets_a_gradient(case, layout):
    kwargs, shape = CASES[case]
    torch.manual_seed(0)
    ours = MBTFEUNet(**kwargs, **(SEED_KNOBS if layout == "seed" else {}))
    plain = PlainConvUNet(**kwargs)
    x = torch.randn(shape)
    out, ref = ours(x), plain(x)
    assert [o.shape for o in out] == [r.shape for r in ref]
    assert len(ours.mbtfe) > 0 and ours.eab is not None
    sum(o.float().square().mean() for o in out).backward()
    missing = [name for name, p in ours.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == [], "DDP without find_unused_parameters needs a gradient for every parameter"


def test_anisotropic_plan_keeps_in_plane_only_kernels():
    kwargs, _ = CASES["3d-anisotropic"]
    net = MBTFEUNet(**kwargs, mbtfe_stages=[0, 1])
    assert list(net.mbtfe["0"].chain[0].conv.kernel_size) == [1, 3, 3]
    assert list(net.eab.attention.conv.kernel_size) == [1, 7, 7]
    assert list(net.eab.pools[0].kernel_size) == [1, 2, 2]


def test_feature_map_estimate_grows_with_the_blocks():
    kwargs, _ = CASES["3d-5-stages"]
    size = [32, 32, 32]
    plain = PlainConvUNet(**kwargs).compute_conv_feature_map_size(size)
    bare = MBTFEUNet(**kwargs, mbtfe_stages=[], eab_stages=0).compute_conv_feature_map_size(size)
    with_mbtfe = MBTFEUNet(**kwargs, eab_stages=0).compute_conv_feature_map_size(size)
    with_eab = MBTFEUNet(**kwargs, mbtfe_stages=[]).compute_conv_feature_map_size(size)
    default = MBTFEUNet(**kwargs).compute_conv_feature_map_size(size)
    seed = MBTFEUNet(**kwargs, **SEED_KNOBS).compute_conv_feature_map_size(size)
    assert bare == plain
    assert plain < with_mbtfe < default and plain < with_eab < default < seed


def test_default_places_mbtfe_from_stage_2_and_not_in_the_bottleneck():
    kwargs, _ = CASES["3d-5-stages"]
    assert MBTFEUNet(**kwargs).mbtfe_stages == [2, 3]
    assert MBTFEUNet(**kwargs, mbtfe_stages="all").mbtfe_stages == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("knob,value", [("mbtfe_stages", [7]), ("mbtfe_stages", "most"),
                                        ("mbtfe_branch_design", "fancy"), ("mbtfe_weighting", "pixel"),
                                        ("eab_stages", 1), ("eab_stages", 9), ("mbtfe_reduction", 0)])
def test_bad_knob_names_the_arch_kwarg(knob, value):
    kwargs, _ = CASES["3d-4-stages"]
    with pytest.raises(MVExtError, match=f"'{knob}'"):
        MBTFEUNet(**kwargs, **{knob: value})


def test_channels_last_and_checkpointing_give_the_same_result():
    kwargs, shape = CASES["3d-4-stages"]
    torch.manual_seed(0)
    ref = MBTFEUNet(**kwargs)
    other = MBTFEUNet(**kwargs, channels_last=True, activation_checkpointing=True)
    other.load_state_dict(ref.state_dict())
    x = torch.randn(shape)
    for a, b in zip(ref(x), other(x)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_branch_weights_are_a_per_sample_softmax():
    net = MBTFEUNet(**CASES["3d-4-stages"][0])
    block = net.mbtfe["2"]
    x = torch.randn(3, block.channels, 4, 4, 4)
    w = block.branch_weights(block.branch_outputs(x))
    assert w.shape == (3, 4)
    torch.testing.assert_close(w.sum(1), torch.ones(3))
    x2 = x.clone()
    x2[1] = torch.randn_like(x2[1]) * 5
    w2 = block.branch_weights(block.branch_outputs(x2))
    torch.testing.assert_close(w2[0], w[0])
    torch.testing.assert_close(w2[2], w[2])


def test_small_plans_still_get_both_blocks():
    for n in (2, 3):
        net = MBTFEUNet(**plan_kwargs(n))
        assert len(net.mbtfe) == 1 and net.eab is not None and len(net.eab.channels) == n
