"""MultiViewFusionNet: slabs through the lesion centre (indices, clamping, interpolation, mirroring), 2D encoders from
isotropic and anisotropic plans, gradients in every head with one and several phases, the memory estimate."""

import itertools

import pytest
import torch
from torch import nn

from nnunet_mvext.architectures.multiview_fusion_net import (
    MultiViewFusionNet,
    encoder_kwargs_2d,
    extract_slab,
    lesion_centres,
)
from nnunet_mvext.errors import MVExtError

K = 3
NAME = "dynamic_network_architectures.architectures.unet.PlainConvUNet"


def _plan(anisotropic=False, encoder="PlainConvUNet", dropout=False):
    """3 stages; anisotropic: thick slices along axis 0 (kernels (1, 3, 3) and strides (1, 2, 2) first, as nnU-Net
    plans them for 5 mm slices)."""
    kernels = [[1, 3, 3], [1, 3, 3], [3, 3, 3]] if anisotropic else [[3, 3, 3]] * 3
    strides = [[1, 1, 1], [1, 2, 2], [2, 2, 2]] if anisotropic else [[1, 1, 1], [2, 2, 2], [2, 2, 2]]
    kw = dict(n_stages=3, features_per_stage=[4, 8, 16], conv_op=nn.Conv3d, kernel_sizes=kernels, strides=strides,
              n_conv_per_stage_decoder=[1, 1], conv_bias=True, norm_op=nn.InstanceNorm3d,
              norm_op_kwargs={"affine": True}, dropout_op=nn.Dropout3d if dropout else None,
              dropout_op_kwargs={"p": 0.1} if dropout else None, nonlin=nn.LeakyReLU,
              nonlin_kwargs={"inplace": True})
    if encoder == "PlainConvUNet":
        kw["n_conv_per_stage"] = [2, 2, 2]
    else:
        kw["n_blocks_per_stage"] = [1, 1, 1]
    return f"dynamic_network_architectures.architectures.unet.{encoder}", kw


def _index_volume(shape, channels=2, batch=2):
    """x[b, c, i, j, k] = 1e6 c + 1e4 i + 1e2 j + k (+ 1e7 b): every voxel says where it is."""
    grids = torch.meshgrid(*[torch.arange(s, dtype=torch.float64) for s in shape], indexing="ij")
    base = 1e4 * grids[0] + 1e2 * grids[1] + grids[2]
    return torch.stack([torch.stack([base + 1e6 * c + 1e7 * b for c in range(channels)]) for b in range(batch)])


def _point_mask(shape, points):
    roi = torch.zeros(len(points), 1, *shape, dtype=torch.float64)
    for b, p in enumerate(points):
        if p is not None:
            roi[(b, 0, *p)] = 1
    return roi


@pytest.mark.parametrize("shape", [(12, 12, 12), (6, 20, 14)])  # isotropic patch; thin, anisotropic patch
@pytest.mark.parametrize("view_slices", [1, 3, 5])
def test_slabs_are_the_planes_through_the_lesion_centre(shape, view_slices):
    net = MultiViewFusionNet(NAME, _plan(anisotropic=shape[0] != shape[1])[1], 2, K, "concat",
                             view_slices=view_slices).double()
    x = _index_volume(shape)
    centre = [(3, 7, 5), (2, 9, 8)]                        # one voxel of lesion each, >= h from the border
    data, masks = net.slabs(x, _point_mask(shape, centre))
    h = view_slices // 2
    for v, axis in enumerate((0, 1, 2)):
        u, w = [a for a in range(3) if a != axis]
        assert data[v].shape == (2, 2 * view_slices, shape[u], shape[w])
        for b in range(2):
            for c in range(2):
                for s in range(view_slices):
                    plane = data[v][b, c * view_slices + s]
                    index = [slice(None)] * 3
                    index[axis] = centre[b][axis] - h + s
                    torch.testing.assert_close(plane, x[(b, c, *index)], rtol=0, atol=0)
                    # decode the voxel indices from the values: the plane's axis index, the in-plane grids
                    decoded = [(plane // 1e4) % 100, (plane // 1e2) % 100, plane % 100]
                    assert torch.all(decoded[axis] == centre[b][axis] - h + s)
                    assert torch.equal(decoded[u][:, 0], torch.arange(shape[u], dtype=plane.dtype))
                    assert torch.equal(decoded[w][0], torch.arange(shape[w], dtype=plane.dtype))
            # the mask's central plane holds the lesion voxel at its in-plane position
            mask = masks[v][b, 0]
            assert mask.sum() == 1 and mask[centre[b][u], centre[b][w]] == 1


def test_centre_is_the_centre_of_mass_and_the_patch_centre_without_a_lesion():
    shape = (8, 10, 12)
    roi = torch.zeros(3, 1, *shape)
    roi[0, 0, 1:4, 2:5, 6:11] = 1
    roi[1, 0, 2, 3, 4] = 1
    roi[1, 0, 6, 3, 4] = 3                                               # soft masks weigh by value
    c = lesion_centres(roi, shape, 3, roi.device)
    torch.testing.assert_close(c[0], torch.tensor([2.0, 3.0, 8.0]))
    torch.testing.assert_close(c[1], torch.tensor([5.0, 3.0, 4.0]))
    torch.testing.assert_close(c[2], torch.tensor([3.5, 4.5, 5.5]))     # empty: (S - 1) / 2
    torch.testing.assert_close(lesion_centres(None, shape, 1, roi.device)[0], torch.tensor([3.5, 4.5, 5.5]))


def test_a_centre_between_planes_interpolates_and_a_centre_at_the_border_is_clamped():
    x = _index_volume((9, 6, 7), channels=1, batch=3)
    slab = extract_slab(x, 0, torch.tensor([2.5, 0.0, 8.0]), 3)
    torch.testing.assert_close(slab[0, 1], 0.5 * (x[0, 0, 2] + x[0, 0, 3]))
    torch.testing.assert_close(slab[0, 0], 0.5 * (x[0, 0, 1] + x[0, 0, 2]))
    torch.testing.assert_close(slab[1], x[1, 0, 0:3])                    # clamped to h = 1: planes 0, 1, 2
    torch.testing.assert_close(slab[2], x[2, 0, 6:9])                    # clamped to S - 1 - h
    with pytest.raises(MVExtError, match="view_slices"):
        extract_slab(x, 1, torch.zeros(3), 7)


def _mirrored(slab: torch.Tensor, axis: int, flips: tuple, view_slices: int, channels: int) -> torch.Tensor:
    """What mirroring the patch along ``flips`` (spatial axes) does to the slab of the view along ``axis``."""
    u, w = [a for a in range(3) if a != axis]
    out = slab
    if axis in flips:   # the slices come in reverse order, per channel
        b = out.shape[0]
        out = out.reshape(b, channels, view_slices, *out.shape[2:]).flip(2).reshape(out.shape)
    dims = [2 + i for i, a in enumerate((u, w)) if a in flips]
    return out.flip(dims) if dims else out


@pytest.mark.parametrize("shape", [(9, 12, 15), (6, 16, 16)])   # odd/even sizes; a thin, anisotropic patch
@pytest.mark.parametrize("lesion", [True, False])               # without lesion the centre is (S-1)/2: half-integer
def test_mirroring_the_patch_and_the_mask_mirrors_the_slabs(shape, lesion):
    torch.manual_seed(0)
    view_slices = 3
    net = MultiViewFusionNet(NAME, _plan()[1], 2, K, "abaf", view_slices=view_slices).double()
    x = torch.randn(2, 2, *shape, dtype=torch.float64)
    roi = torch.zeros(2, 1, *shape, dtype=torch.float64)
    if lesion:
        roi[0, 0, 1:4, 2:7, 3:5] = 1
        roi[0, 0, 4, 6, 9] = 1                                           # asymmetric: a fractional centre of mass
        roi[1, 0, 2:5, 5:9, 8:13] = 1
    data, masks = net.slabs(x, roi)
    for r in range(1, 4):
        for flips in itertools.combinations((0, 1, 2), r):
            dims = [2 + a for a in flips]
            data_f, masks_f = net.slabs(x.flip(dims), roi.flip(dims))
            for v, axis in enumerate((0, 1, 2)):
                torch.testing.assert_close(data_f[v], _mirrored(data[v], axis, flips, view_slices, 2))
                torch.testing.assert_close(masks_f[v], _mirrored(masks[v], axis, flips, 1, 1))


def test_two_d_encoders_take_the_plans_in_plane_kernels_and_strides():
    """Thick slices along axis 0: the axial encoder convolves and pools in-plane from the start, the coronal and
    sagittal encoders never across the thick slices until the plan does."""
    name, kw = _plan(anisotropic=True, dropout=True)
    net = MultiViewFusionNet(name, kw, 1, K, "abaf", view_slices=3)
    first_convs = [[m for m in enc.modules() if isinstance(m, nn.Conv2d)] for enc in net.encoders]
    assert [c[0].kernel_size for c in first_convs] == [(3, 3), (1, 3), (1, 3)]
    assert [c[0].in_channels for c in first_convs] == [3, 3, 3]
    stage_strides = [[s.convs[0].conv.stride for s in (st[0] for st in enc.stages)] for enc in net.encoders]
    assert stage_strides == [[(1, 1), (2, 2), (2, 2)], [(1, 1), (1, 2), (2, 2)], [(1, 1), (1, 2), (2, 2)]]
    assert not any(isinstance(m, (nn.Conv3d, nn.InstanceNorm3d, nn.Dropout3d)) for m in net.modules())
    assert any(isinstance(m, nn.Dropout2d) for m in net.modules())
    assert encoder_kwargs_2d(kw, 1)["kernel_sizes"] == [[1, 3], [1, 3], [3, 3]]


@pytest.mark.parametrize("fusion", ["concat", "dsn", "abaf", "decision"])
@pytest.mark.parametrize("phases,shared", [(1, False), (3, False), (3, True)])
@pytest.mark.parametrize("encoder", ["PlainConvUNet", "ResidualEncoderUNet"])
def test_every_parameter_gets_a_gradient(fusion, phases, shared, encoder):
    """Views alone (one channel) and phases x views; one sample without a lesion (left out of the loss)."""
    name, kw = _plan(anisotropic=True, encoder=encoder)
    net = MultiViewFusionNet(name, kw, phases, K, fusion, view_slices=3, shared_encoder=shared)
    assert net.decoder is None and net.num_branches == phases * 3
    assert len(net.encoders) == (3 if shared else phases * 3)
    x = torch.randn(3, phases, 8, 16, 16)
    roi = torch.zeros(3, 1, 8, 16, 16)
    roi[0, :, 2:6, 4:10, 4:10] = 1
    roi[2, :, 5:8, 1:6, 9:15] = 1
    net.classification_output = True
    seg, head = net(x, roi)
    assert seg is None and head["has_roi"].tolist() == [True, False, True]
    assert head["logits"].shape == (3, K)
    if head["beta"] is not None:
        assert head["beta"].shape == (3, phases * 3)
    net.head.loss(head, torch.tensor([0, 1, 2]), None, head["has_roi"].float()).backward()
    assert [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []


def test_branch_order_is_phase_major_and_each_branch_sees_its_phase_and_view():
    name, kw = _plan()
    net = MultiViewFusionNet(name, kw, 2, K, "concat").eval()
    x = torch.randn(1, 2, 8, 12, 12)
    roi = torch.zeros(1, 1, 8, 12, 12)
    roi[..., 3:5, 5:8, 4:7] = 1
    with torch.no_grad():
        a = net.branch_embeddings(x, roi)
        x2 = x.clone()
        x2[:, 1] = torch.randn(1, 8, 12, 12)                                # change phase 1 only
        b = net.branch_embeddings(x2, roi)
        x3 = x.clone()
        x3[:, 0, 4] += 5                                                    # phase 0, axial plane 4 only
        c = net.branch_embeddings(x3, roi)
    assert a.shape == (1, 6, 2 * (4 + 8 + 16))
    changed = [not torch.allclose(a[0, i], b[0, i]) for i in range(6)]
    assert changed == [False, False, False, True, True, True]
    # centre (4, 6, 5): axial plane 4 is the whole axial slab; coronal/sagittal slabs cross it along a line
    changed = [not torch.allclose(a[0, i], c[0, i]) for i in range(6)]
    assert changed == [True, True, True, False, False, False]
    x4 = x.clone()
    x4[:, 0, 1] += 5                                                        # axial plane 1: not in the axial slab
    with torch.no_grad():
        d = net.branch_embeddings(x4, roi)
    assert torch.allclose(a[0, 0], d[0, 0]) and not torch.allclose(a[0, 1], d[0, 1])


def test_shared_encoder_is_one_call_per_view_with_the_phases_folded():
    name, kw = _plan()
    net = MultiViewFusionNet(name, kw, 3, K, "abaf", shared_encoder=True)
    calls = []
    for enc in net.encoders:
        enc.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape)))
    net.forward_with_classification(torch.randn(2, 3, 8, 12, 10))
    assert calls == [(6, 1, 12, 10), (6, 1, 8, 10), (6, 1, 8, 12)]


def test_memory_estimate_counts_the_conv_outputs_of_every_branch():
    name, kw = _plan(anisotropic=True)
    net = MultiViewFusionNet(name, kw, 2, K, "abaf", view_slices=3).eval()
    total = [0]
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(lambda m, i, o: total.__setitem__(0, total[0] + o[0].numel()))
    with torch.no_grad():
        net.forward_with_classification(torch.randn(1, 2, 8, 16, 24))
    assert int(net.compute_conv_feature_map_size([8, 16, 24])) == total[0]


def test_the_plain_forward_says_there_is_no_segmentation():
    net = MultiViewFusionNet(NAME, _plan()[1], 1, K, "abaf")
    with pytest.raises(MVExtError, match="no segmentation output"):
        net(torch.randn(1, 1, 8, 8, 8))


@pytest.mark.parametrize("views,view_slices,message", [
    (["axial", "frontal"], 1, "unknown view 'frontal'"),
    (["axial", "axial"], 1, "names a view twice"),
    ([], 1, "'views' is empty"),
    (["axial"], 2, "'view_slices' is 2"),
    (["axial"], 0, "'view_slices' is 0"),
])
def test_bad_views_are_refused(views, view_slices, message):
    with pytest.raises(MVExtError, match=message):
        MultiViewFusionNet(NAME, _plan()[1], 1, K, "abaf", views, view_slices)


def test_has_roi_says_whether_every_view_pooled_region_voxels():
    """Two lesions on either side of the patch centre: their centre of mass lies between them, no view's central plane
    holds a lesion voxel, every branch pools the slab's global mean, and the sample is not lesion-pooled."""
    net = MultiViewFusionNet(NAME, _plan()[1], 1, K, "concat").eval()
    roi = torch.zeros(2, 1, 12, 12, 12)
    roi[:, :, 1:4, 1:4, 1:4] = 1
    roi[0, :, 8:11, 8:11, 8:11] = 1
    with torch.no_grad():
        _, head = net.forward_with_classification(torch.randn(2, 1, 12, 12, 12), roi)
        _, planes = net.slabs(torch.zeros(2, 1, 12, 12, 12), roi)
    assert [float(p[0].sum()) for p in planes] == [0.0, 0.0, 0.0]
    assert head["has_roi"].tolist() == [False, True]
    assert net.region_in_every_view(roi).tolist() == [False, True]


@pytest.mark.parametrize("shared", [False, True])
def test_each_sample_is_pooled_over_its_own_mask_in_a_batch(shared):
    """B = 3 (one empty mask), P = 2 phases, 3 views: each sample's embeddings in the batch are those of the sample
    alone with its own mask."""
    torch.manual_seed(0)
    net = MultiViewFusionNet(NAME, _plan()[1], 2, K, "concat", shared_encoder=shared).eval()
    x = torch.randn(3, 2, 8, 12, 12)
    roi = torch.zeros(3, 1, 8, 12, 12)
    roi[0, :, 0:3, 0:4, 0:4] = 1
    roi[2, :, 4:8, 7:12, 5:10] = 1
    with torch.no_grad():
        batch = net.branch_embeddings(x, roi)
        for b in range(3):
            torch.testing.assert_close(batch[b], net.branch_embeddings(x[b:b + 1], roi[b:b + 1])[0])
