"""One class prediction per case from a ``MultiPhaseFusionNet``: how patches become a case prediction.

1. Find the lesion in the predicted segmentation (label ``lesion_label``): the centre of its largest connected
   component. No lesion found: the volume's centre, and the case is flagged (it still gets a prediction).
2. Crop one patch of the training patch size centred there (zero padding outside the volume), in nnU-Net's
   preprocessed space.
3. Run the classification head on the patch and on every mirrored copy along the allowed mirroring axes (the same
   test-time mirroring nnU-Net uses for segmentation) and average the softmax probabilities. Folds are averaged the
   same way by the caller.
"""

from __future__ import annotations

import itertools
from typing import Optional, Sequence

import numpy as np
import torch
from scipy import ndimage


def lesion_centre(mask: np.ndarray) -> Optional[tuple]:
    """Centre (voxel indices) of the largest connected component of ``mask``; None when empty."""
    if not mask.any():
        return None
    components, n = ndimage.label(mask)
    sizes = ndimage.sum(mask, components, range(1, n + 1))
    largest = int(np.argmax(sizes)) + 1
    return tuple(int(round(c)) for c in ndimage.center_of_mass(components == largest))


def crop_around(data: torch.Tensor, centre: Sequence[int], patch_size: Sequence[int]) -> torch.Tensor:
    """``data`` (C, *S) -> (C, *patch_size) centred on ``centre``, zero-padded outside the volume."""
    out = torch.zeros((data.shape[0], *patch_size), dtype=data.dtype)
    src, dst = [], []
    for c, p, s in zip(centre, patch_size, data.shape[1:]):
        lo = c - p // 2
        a, b = max(lo, 0), min(lo + p, s)
        src.append(slice(a, b))
        dst.append(slice(a - lo, b - lo))
    out[(slice(None), *dst)] = data[(slice(None), *src)]
    return out


@torch.no_grad()
def classify_patch(network, patch: torch.Tensor, mirror_axes: Optional[Sequence[int]],
                   device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Mean softmax (K,) and mean fused embedding over the patch and its mirrored copies."""
    x = patch[None].to(device)
    axes = [a + 2 for a in (mirror_axes or ())]
    combos = [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]
    probs, embeddings = [], []
    for flip in combos:
        _, out = network.forward_with_classification(torch.flip(x, flip) if flip else x)
        probs.append(torch.softmax(out["logits"].float(), 1)[0])
        embeddings.append(out["embedding"].float()[0])
    return torch.stack(probs).mean(0).cpu().numpy(), torch.stack(embeddings).mean(0).cpu().numpy()


def classify_case(network, data: torch.Tensor, segmentation: Optional[np.ndarray], lesion_label: int,
                  patch_size: Sequence[int], mirror_axes: Optional[Sequence[int]], device: torch.device) -> dict:
    """``{"probabilities", "embedding", "lesion_found"}`` for one preprocessed case ``data`` (C, *S)."""
    centre = lesion_centre(segmentation == lesion_label) if segmentation is not None else None
    found = centre is not None
    if not found:
        centre = tuple(s // 2 for s in data.shape[1:])
    probs, embedding = classify_patch(network, crop_around(data, centre, patch_size), mirror_axes, device)
    return {"probabilities": probs, "embedding": embedding, "lesion_found": found}
