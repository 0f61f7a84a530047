"""The lesion embedding of one phase (or view) branch: the lesion against its surroundings, at every encoder stage.

For the skips ``s^i`` (N, C_i, *S_i) of one branch and a region-of-interest mask ``m`` (N, 1, *S) (the lesion: ground
truth in training, the predicted lesion or a given box at inference), at every stage i::

    w^i    = area_downsample(m, S_i)                          (N, 1, *S_i)  fraction of each voxel in the lesion
    r^i    = max(maxpool_3(w^i) - w^i, 0)                     (N, 1, *S_i)  a one-voxel ring around it (context "ring")
    l^i    = sum_v w^i_v s^i_v / sum_v w^i_v                  (N, C_i)      lesion mean
    c^i    = sum_v r^i_v s^i_v / sum_v r^i_v                  (N, C_i)      mean of the surroundings
    e^i    = [l^i ; l^i - c^i]                                (N, 2 C_i)
    f      = W [e^0; ...; e^{n-1}]                            (N, D)        D = min(2 sum_i C_i, MAX_EMBEDDING_DIM)

The ring is one voxel wide at each stage's resolution, so the stages together compare the lesion with its
surroundings at every scale (one voxel around it at full resolution, 2^(n-1) voxels at the bottleneck).
``context="patch"`` compares with the mean of the whole patch instead. ``W`` is a linear projection, present only when
``2 sum_i C_i`` exceeds :data:`MAX_EMBEDDING_DIM` (a 3d_fullres plan with 32..320 features gives 2240 per phase,
which would make the fusion heads' per-phase gates P^2 D^2 parameters).

Why: the release before pooled the lesion mean of the last two stages only. A diagnosis reads the enhancement of a
lesion relative to the tissue around it, and the encoder's instance normalisation removes the absolute level of each
patch; the difference to the surroundings restores it. Source: issue 15, whose filer measured on a data set of their
own (binary, 3 phases, 40 held-out cases, one seed) held-out AUC 0.795 for the last-two-stages lesion mean and 0.987
for ``[lesion mean; lesion mean - patch mean]`` at every stage; this package's own measurements of the ring and patch
contexts are in ``benchmarks/RESULTS.md``.

Pooling runs in fp32 (under autocast too): a one-voxel lesion at stride 32 weighs 3e-5, subnormal in fp16.
A sample whose region is empty (or no mask given) gets the global mean of each stage and a zero contrast;
``has_roi`` (N,) says which samples were pooled over their region. ``patch_pooling`` (trainer setting
``protocol_ablation``, for ablation studies) ignores the region: every stage's global mean, as the first release's
whole-patch pooling (which used the bottleneck alone). ``lesion_mean_only`` (``protocol_ablation``
``lesion_mean_embedding``) is release 2's embedding: the lesion mean ``l^i`` of the last two stages only.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: largest embedding per branch before a linear projection is added
MAX_EMBEDDING_DIM = 128
CONTEXTS = ("ring", "patch")
_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def _weighted_mean(features: torch.Tensor, weights: torch.Tensor, spatial: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    mass = weights.sum(dim=spatial)                                                     # (N, 1)
    return (features * weights).sum(dim=spatial) / mass.clamp_min(1e-6), mass[:, 0] > 0


def region_weights(roi: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``roi`` (N, 1, *S) -> the fraction of each voxel of a stage of size ``size`` inside the region (N, 1, *size)."""
    return F.interpolate(roi.float(), size=tuple(size), mode="area")


def ring_weights(w: torch.Tensor) -> torch.Tensor:
    """A one-voxel ring around the soft region ``w`` (N, 1, *S_i): ``max(maxpool_3(w) - w, 0)``."""
    dims = w.ndim - 2
    dilated = _MAX_POOL[dims](w, kernel_size=3, stride=1, padding=1)
    return (dilated - w).clamp_min(0)


def lesion_contrast(features: torch.Tensor, roi: Optional[torch.Tensor], context: str = "ring"
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """``[lesion mean; lesion mean - context mean]`` of one stage: (N, C, *S_i) -> ((N, 2C) fp32, has_roi (N,))."""
    spatial = tuple(range(2, features.ndim))
    f = features.float()
    global_mean = f.mean(dim=spatial)
    zeros = torch.zeros_like(global_mean)
    if roi is None:
        return torch.cat([global_mean, zeros], 1), torch.zeros(f.shape[0], dtype=torch.bool, device=f.device)
    w = region_weights(roi, f.shape[2:])
    lesion, has_roi = _weighted_mean(f, w, spatial)
    if context == "ring":
        surroundings, has_ring = _weighted_mean(f, ring_weights(w), spatial)
        surroundings = torch.where(has_ring[:, None], surroundings, global_mean)
    else:
        surroundings = global_mean
    lesion = torch.where(has_roi[:, None], lesion, global_mean)
    contrast = torch.where(has_roi[:, None], lesion - surroundings, zeros)
    return torch.cat([lesion, contrast], 1), has_roi


class LesionEmbedding(nn.Module):
    """The branch embedding ``f`` (N, D) of the module docstring from a branch's skips, one ``W`` per branch."""

    def __init__(self, stage_channels: Sequence[int], num_branches: int, context: str = "ring",
                 patch_pooling: bool = False, lesion_mean_only: bool = False):
        super().__init__()
        if context not in CONTEXTS:
            raise ValueError(f"context must be one of {CONTEXTS}, got {context!r}")
        self.context = context
        self.patch_pooling = patch_pooling
        self.lesion_mean_only = lesion_mean_only
        self.first_stage = max(0, len(stage_channels) - 2) if lesion_mean_only else 0
        pooled_channels = list(stage_channels)[self.first_stage:]
        self.raw_dim = sum(pooled_channels) * (1 if lesion_mean_only else 2)
        self.dim = min(self.raw_dim, MAX_EMBEDDING_DIM)
        self.projections = None
        if self.raw_dim > self.dim:
            self.projections = nn.ModuleList([nn.Linear(self.raw_dim, self.dim) for _ in range(num_branches)])

    def pooled(self, skips: Sequence[torch.Tensor], roi: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Skips of N samples (stage i: (N, C_i, *S_i)) -> ``[e^0; ...; e^{n-1}]`` (N, 2 sum C_i), has_roi (N,)."""
        roi = None if self.patch_pooling else roi
        parts, has_roi = [], None
        for s in skips[self.first_stage:]:
            e, has_roi = lesion_contrast(s, roi, self.context)
            parts.append(e[:, :s.shape[1]] if self.lesion_mean_only else e)
        return torch.cat(parts, 1), has_roi

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, P, 2 sum C_i) -> (B, P, D): branch p through its own ``W_p`` (identity when no projection)."""
        if self.projections is None:
            return pooled
        dtype = self.projections[0].weight.dtype
        return torch.stack([w(pooled[:, p].to(dtype)) for p, w in enumerate(self.projections)], dim=1)
