"""One class prediction per case from a ``MultiPhaseFusionNet``: how a whole volume becomes a case prediction.

Training pools each phase's features over the ground-truth lesion of a patch. A case is classified the same way:

1. **Region of interest.** The lesion label ``lesion_label`` of the predicted segmentation (or of a given mask or box,
   ``predict-cls --roi``). With several connected components, the **most lesion-probable** one is used: the
   component with the largest lesion probability mass ``sum_v p_lesion(v)`` (size times confidence; with a hard mask,
   its voxel count). Cases without any lesion voxel use the largest component of ``fallback_roi_label`` when the
   model was trained with one (e.g. the organ, for normal-vs-abnormal tasks), else the volume centre with global
   pooling; either way the case is flagged (``roi`` column).
2. **Patch.** One patch of the training patch size centred on that component (zero padding outside the volume), in
   nnU-Net's preprocessed space, with the component's mask cropped alike.
3. **Prediction.** The network pools over the mask, as in training. The patch and its mask are mirrored together
   along the allowed mirroring axes (the same test-time mirroring nnU-Net uses for segmentation; the channel axis is
   never flipped) and the softmax probabilities, phase weights and auxiliary probabilities are averaged. Folds are
   averaged the same way by the caller.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from scipy import ndimage


@dataclass(frozen=True)
class RegionOfInterest:
    """Where a case is classified: the component's voxel mask (*S) (None: global pooling) and its centre."""

    mask: Optional[np.ndarray]
    centre: tuple
    source: str  # "lesion", "fallback" or "none"


def most_probable_component(mask: np.ndarray, probability: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
    """The connected component of ``mask`` with the largest ``sum(probability)`` (voxel count without one)."""
    if not mask.any():
        return None
    components, n = ndimage.label(mask)
    weights = mask.astype(np.float64) if probability is None else np.asarray(probability, dtype=np.float64) * mask
    mass = ndimage.sum(weights, components, range(1, n + 1))
    return components == int(np.argmax(mass)) + 1


def select_region(segmentation: Optional[np.ndarray], lesion_label: int, volume_shape: Sequence[int],
                  lesion_probability: Optional[np.ndarray] = None,
                  fallback_label: Optional[int] = None) -> RegionOfInterest:
    """The region a case is classified from (see the module docstring), from a label map (*S)."""
    if segmentation is not None:
        component = most_probable_component(segmentation == lesion_label, lesion_probability)
        source = "lesion"
        if component is None and fallback_label is not None:
            component, source = most_probable_component(segmentation == fallback_label), "fallback"
        if component is not None:
            centre = tuple(int(round(c)) for c in ndimage.center_of_mass(component))
            return RegionOfInterest(component, centre, source)
    return RegionOfInterest(None, tuple(s // 2 for s in volume_shape), "none")


def crop_around(data, centre: Sequence[int], patch_size: Sequence[int]) -> torch.Tensor:
    """``data`` (C, *S) -> (C, *patch_size) centred on ``centre``, zero-padded outside the volume. ``data`` is a
    tensor or an array that slices lazily (nnU-Net's blosc2 case arrays: only the patch is decompressed)."""
    src, dst = [], []
    for c, p, s in zip(centre, patch_size, data.shape[1:]):
        lo = c - p // 2
        a, b = max(lo, 0), min(lo + p, s)
        src.append(slice(a, b))
        dst.append(slice(a - lo, b - lo))
    piece = data[(slice(None), *src)]
    piece = piece if isinstance(piece, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(piece))
    out = torch.zeros((data.shape[0], *patch_size), dtype=piece.dtype)
    out[(slice(None), *dst)] = piece
    return out


def mirror_flips(mirror_axes: Optional[Sequence[int]]) -> list[tuple]:
    """Every subset of the spatial ``mirror_axes`` as dims of a (B, C, *S) tensor: the channel axis is never flipped."""
    axes = [a + 2 for a in (mirror_axes or ())]
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


@torch.no_grad()
def classify_patch(network, patch: torch.Tensor, roi: Optional[torch.Tensor], mirror_axes: Optional[Sequence[int]],
                   device: torch.device, absent_phases: Optional[Sequence[bool]] = None) -> dict:
    """Mean softmax (K,), embedding, beta (P,) and auxiliary probabilities (P, K) over the mirrored copies;
    ``absent_phases`` (P,): phases whose series the case lacks (left out of the fusion)."""
    x = patch[None].to(device)
    m = None if roi is None else roi[None, None].to(device=device, dtype=x.dtype)
    absent = None if absent_phases is None else torch.tensor([list(absent_phases)], dtype=torch.bool, device=device)
    outputs = []
    for flip in mirror_flips(mirror_axes):
        xf = torch.flip(x, flip) if flip else x
        mf = None if m is None else (torch.flip(m, flip) if flip else m)
        _, out = network.forward_with_classification(xf, mf, absent)
        outputs.append(out)

    def mean(key, fn=lambda t: t):
        if outputs[0][key] is None:
            return None
        return torch.stack([fn(o[key].float())[0] for o in outputs]).mean(0).cpu().numpy()

    return {"probabilities": mean("logits", lambda t: torch.softmax(t, 1)), "embedding": mean("embedding"),
            "beta": mean("beta"), "aux_probabilities": mean("aux_logits", lambda t: torch.softmax(t, 2))}


def classify_case(network, data: torch.Tensor, region: RegionOfInterest, patch_size: Sequence[int],
                  mirror_axes: Optional[Sequence[int]], device: torch.device,
                  absent_phases: Optional[Sequence[bool]] = None) -> dict:
    """Classify one preprocessed case ``data`` (C, *S) from ``region``; adds ``roi`` (its source) to the result.
    ``absent_phases`` (P,): phases the case lacks (the missing-phases record), left out of the fusion."""
    patch = crop_around(data, region.centre, patch_size)
    roi = None
    if region.mask is not None:
        roi = crop_around(torch.from_numpy(region.mask[None].astype(np.float32)), region.centre, patch_size)[0]
    result = classify_patch(network, patch, roi, mirror_axes, device, absent_phases)
    result["roi"] = region.source
    return result
