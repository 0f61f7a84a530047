"""``compute_conv_feature_map_size`` counts what nnU-Net counts, one map per conv output, checked with forward hooks."""

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from nnunet_mvext.architectures.edge_aggregation_block import EdgeAggregationBlock
from nnunet_mvext.architectures.mbtfe_block import MBTFEBlock
from nnunet_mvext.architectures.mbtfe_knobs import SEED_KNOBS
from nnunet_mvext.architectures.mbtfe_unet import MBTFEUNet

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
ANISOTROPIC = dict(input_channels=2, n_stages=5, features_per_stage=[4, 8, 16, 32, 32], conv_op=nn.Conv3d,
                   kernel_sizes=[[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
                   strides=[[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2]], n_conv_per_stage=2, num_classes=3,
                   n_conv_per_stage_decoder=2, conv_bias=True, norm_op=nn.InstanceNorm3d,
                   norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True},
                   deep_supervision=True)
SIZE = [8, 48, 32]


def conv_output_voxels(module: nn.Module, *inputs) -> int:
    """Sum of the output sizes of every conv call in one forward pass with batch 1."""
    total = [0]
    handles = [m.register_forward_hook(lambda m, i, o: total.__setitem__(0, total[0] + o.numel()))
               for m in module.modules() if isinstance(m, CONVS)]
    with torch.no_grad():
        module(*inputs)
    for h in handles:
        h.remove()
    return total[0]


def assert_within_5_percent(estimate, hooked):
    assert abs(int(estimate) - hooked) <= 0.05 * hooked, f"estimate {int(estimate)} vs {hooked} conv-output voxels"


@pytest.mark.parametrize("design", ["cascade", "parallel"])
@pytest.mark.parametrize("dim,kernel,size", [(3, [1, 3, 3], [4, 12, 10]), (2, [3, 3], [12, 10])])
def test_mbtfe_block_counts_its_conv_outputs(design, dim, kernel, size):
    conv, norm = (nn.Conv3d, nn.InstanceNorm3d) if dim == 3 else (nn.Conv2d, nn.InstanceNorm2d)
    block = MBTFEBlock(conv, 6, kernel, True, norm, {"affine": True}, nn.LeakyReLU, {}, branch_design=design)
    estimate = block.compute_conv_feature_map_size(size)
    assert_within_5_percent(estimate, conv_output_voxels(block, torch.randn(1, 6, *size)))


@pytest.mark.parametrize("coarse", [True, False])
@pytest.mark.parametrize("fold", [True, False])
def test_eab_counts_its_conv_outputs_with_anisotropic_strides(coarse, fold):
    n = 3
    channels = ANISOTROPIC["features_per_stage"][:n]
    strides = ANISOTROPIC["strides"][:n]
    eab = EdgeAggregationBlock(nn.Conv3d, channels, strides, ANISOTROPIC["kernel_sizes"][:n], nn.InstanceNorm3d,
                               {"affine": True}, nn.LeakyReLU, {}, coarse=coarse, fold_up_projection=fold)
    sizes, size = [], SIZE
    for s in strides:
        size = [a // b for a, b in zip(size, s)]
        sizes.append(size)
    skips = [torch.randn(1, c, *s) for c, s in zip(channels, sizes)]
    assert_within_5_percent(eab.compute_conv_feature_map_size(sizes), conv_output_voxels(eab, skips))


@pytest.mark.parametrize("layout", ["plain", "default", "seed", "no EAB", "no MBTFE"])
def test_whole_network_estimate_matches_conv_outputs_on_an_anisotropic_plan(layout):
    knobs = {"plain": None, "default": {}, "seed": SEED_KNOBS, "no EAB": {"eab_stages": 0},
             "no MBTFE": {"mbtfe_stages": []}}[layout]
    net = PlainConvUNet(**ANISOTROPIC) if knobs is None else MBTFEUNet(**ANISOTROPIC, **knobs)
    hooked = conv_output_voxels(net, torch.randn(1, 2, *SIZE))
    assert_within_5_percent(net.compute_conv_feature_map_size(SIZE), hooked)


def test_ratio_to_the_plain_unet_is_the_ratio_of_conv_outputs():
    x = torch.randn(1, 2, *SIZE)
    plain, ours = PlainConvUNet(**ANISOTROPIC), MBTFEUNet(**ANISOTROPIC)
    estimated = ours.compute_conv_feature_map_size(SIZE) / plain.compute_conv_feature_map_size(SIZE)
    hooked = conv_output_voxels(ours, x) / conv_output_voxels(plain, x)
    assert estimated > 1.0 and estimated == pytest.approx(hooked, rel=0.05)
