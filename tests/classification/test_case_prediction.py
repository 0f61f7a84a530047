"""How a whole volume becomes a case prediction: the region rule, the crop, mirroring with the mask."""

import numpy as np
import torch

from nnunet_mvext.classification.case_prediction import (
    classify_case,
    crop_around,
    mirror_flips,
    most_probable_component,
    select_region,
)

LESION, ORGAN = 2, 1


def _two_components():
    seg = np.zeros((12, 12, 12), np.uint8)
    seg[1:5, 1:5, 1:5] = LESION          # large (64 voxels), low lesion probability
    seg[8:10, 8:10, 8:10] = LESION       # small (8 voxels), confident
    probability = np.zeros(seg.shape, np.float32)
    probability[1:5, 1:5, 1:5] = 0.1     # mass 6.4
    probability[8:10, 8:10, 8:10] = 0.95  # mass 7.6
    return seg, probability


def test_the_most_lesion_probable_component_wins_over_the_largest():
    seg, probability = _two_components()
    region = select_region(seg, LESION, seg.shape, probability)
    assert region.source == "lesion" and region.centre == (8, 8, 8)  # centre of mass 8.5, rounded half to even
    assert region.mask.sum() == 8 and region.mask[8, 8, 8] and not region.mask[2, 2, 2]


def test_without_probabilities_the_largest_component_wins():
    seg, _ = _two_components()
    component = most_probable_component(seg == LESION)
    assert component.sum() == 64


def test_no_lesion_uses_the_fallback_label_or_the_volume_centre():
    seg = np.zeros((10, 10, 10), np.uint8)
    seg[2:6, 2:6, 2:6] = ORGAN
    fallback = select_region(seg, LESION, seg.shape, None, ORGAN)
    assert fallback.source == "fallback" and fallback.mask.sum() == 64
    none = select_region(seg, LESION, seg.shape)
    assert none.source == "none" and none.mask is None and none.centre == (5, 5, 5)


def test_crop_pads_outside_the_volume():
    data = torch.arange(1000, dtype=torch.float32).reshape(1, 10, 10, 10)
    crop = crop_around(data, (0, 5, 9), (4, 4, 4))
    assert crop.shape == (1, 4, 4, 4)
    assert crop[0, 0, 0, 0] == 0 and crop[0, 2, 2, 2] == data[0, 0, 5, 9]


def test_mirroring_never_flips_batch_or_channel_axes():
    flips = mirror_flips((0, 1, 2))
    assert len(flips) == 8 and () in flips
    assert all(min(f) >= 2 for f in flips if f)
    assert mirror_flips(None) == [()]


class _RecordingNet(torch.nn.Module):
    """Returns the mean of channel 0 inside the mask as the logit of class 1: checks mask and image flip together."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward_with_classification(self, x, roi, absent_phases=None):
        self.calls.append((x.shape, None if roi is None else roi.shape))
        inside = (x[:, :1] * roi).sum() / roi.sum()
        logits = torch.stack([torch.zeros(()), inside])[None]
        return None, {"logits": logits, "embedding": logits, "beta": None, "aux_logits": None}


def test_image_and_mask_are_mirrored_together():
    data = torch.zeros(2, 10, 10, 10)
    data[0, 1:3, 1:3, 1:3] = 5.0     # the lesion's intensity in channel 0
    data[1] = torch.randn(10, 10, 10)
    seg = np.zeros((10, 10, 10), np.uint8)
    seg[1:3, 1:3, 1:3] = LESION
    region = select_region(seg, LESION, seg.shape)
    net = _RecordingNet()
    out = classify_case(net, data, region, (6, 6, 6), (0, 1, 2), torch.device("cpu"))
    assert len(net.calls) == 8 and all(c == ((1, 2, 6, 6, 6), (1, 1, 6, 6, 6)) for c in net.calls)
    expected = torch.softmax(torch.tensor([0.0, 5.0]), 0).numpy()
    np.testing.assert_allclose(out["probabilities"], expected, rtol=1e-5)
    assert out["roi"] == "lesion"


def test_an_asymmetric_lesion_is_pooled_from_the_same_voxels_in_every_mirrored_copy():
    """An L-shaped lesion away from the patch centre: a mask left unmirrored (or mirrored along other axes than the
    image) would pool background voxels in some copies and lower the mean below the lesion's intensity 5."""
    torch.manual_seed(0)
    data = torch.rand(2, 12, 12, 12)     # background in [0, 1)
    seg = np.zeros((12, 12, 12), np.uint8)
    seg[3:7, 4:6, 5:6] = LESION
    seg[3:4, 6:9, 5:8] = LESION
    data[0][torch.from_numpy(seg == LESION)] = 5.0
    region = select_region(seg, LESION, seg.shape)
    assert region.centre == (4, 6, 6)    # the lesion spans patch planes 3..6 (of 0..7) along axis 0: not symmetric
    net = _RecordingNet()
    out = classify_case(net, data, region, (8, 8, 8), (0, 1, 2), torch.device("cpu"))
    assert len(net.calls) == 8
    expected = torch.softmax(torch.tensor([0.0, 5.0]), 0).numpy()
    np.testing.assert_allclose(out["probabilities"], expected, rtol=1e-5)
