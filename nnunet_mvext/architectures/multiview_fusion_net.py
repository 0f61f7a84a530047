"""``MultiViewFusionNet``: 2.5D case classification. Orthogonal 2D slabs through the lesion centre of the 3D patch,
one 2D encoder branch per (phase, view) pair, lesion-pooled embeddings fused by the heads of
:mod:`~nnunet_mvext.architectures.phase_fusion_heads` (seed 000, task 1: one object seen in three orthogonal planes,
a CNN branch per view, features fused for the class).

Input: the 3D patch ``x`` (B, C, S_0, S_1, S_2) that nnU-Net's loader produced (all spatial augmentation and
mirroring already applied once in 3D, so the views of a sample stay consistent with each other) and the lesion mask
``roi`` (B, 1, S_0, S_1, S_2) or None.

**Views** are axes of the preprocessed array (after nnU-Net's ``transpose_forward``): ``axial`` = axis 0,
``coronal`` = axis 1, ``sagittal`` = axis 2 (:data:`VIEW_AXES`). For a volume read in the usual orientation, where
nnU-Net's (z, y, x) array has the slice axis first, these are the anatomical planes; for other data they are just the
three array axes (see docs/how_to/multiview.md).

**Lesion centre** (per sample, continuous, voxel units)::

    c_b = sum_v m_bv v / sum_v m_bv           (B, 3)  centre of mass of the mask
    c_b = ((S_0 - 1) / 2, (S_1 - 1) / 2, (S_2 - 1) / 2)  when the mask is empty or None
    c_b,a <- clamp(c_b,a, h, S_a - 1 - h),    h = (view_slices - 1) / 2   (the slab stays inside the patch)

**Slab** of view a (axis a, in-plane axes (u, w): the other two in their array order), ``n = view_slices`` slices
at the positions ``q_k = c_a + k``, k = -h..h, each linearly interpolated between its two neighbouring planes::

    slab_a[b, (c, k), :, :] = (1 - t) x[b, c, .. floor(q_k) ..] + t x[b, c, .. floor(q_k) + 1 ..],  t = q_k - floor(q_k)
    (B, C, S_a, S_u, S_w) -> (B, C * n, S_u, S_w)     channels phase-major, slices in increasing index

At an integer centre these are exactly the planes ``c_a - h .. c_a + h``. The interpolation (instead of rounding)
makes the slabs equivariant under mirroring for every centre, half-integer ones included (an empty mask in an even
patch has its centre between two planes): mirroring the patch and the mask along axis a reverses the slab's slice
order; mirroring along u or w mirrors the slab in that direction.

**Branches**: every (phase, view) pair, ordered phase-major: ``branch = p * V + v`` (B, P*V, D) into the head, so
beta is reported per (phase, view) and the decision head has one classifier per pair. Each branch's input is that
phase's channels' slab, (B, |phase| * n, S_u, S_w). Separate weights per branch (default) or, with
``shared_encoder``, one encoder per view shared by all phases (phases folded into the batch); views never share an
encoder, because their in-plane kernels and strides differ on anisotropic plans.

**2D encoders from the plan**: the plan's encoder class (``PlainConvEncoder`` / ``ResidualEncoder``), features per
stage, convolutions and blocks per stage, with ``Conv2d``, the 2D norm (instance or batch norm of the plan; other
norms unchanged) and 2D dropout, and the plan's kernels and strides **with the view's axis dropped**. So the plan's
own anisotropy handling carries over: with 5 mm slices along axis 0 the plan has kernels (1, 3, 3) and strides
(1, 2, 2) in its first stages; the axial encoder gets (3, 3)/(2, 2), the coronal and sagittal encoders (1, 3)/(1, 2)
- no convolution and no pooling across the thick slices until the plan's spacing is comparable, exactly as the 3D
network does. A view never resamples its slab to isotropic pixels.

**Lesion embedding** per branch, as in ``MultiPhaseFusionNet`` (:mod:`.lesion_embedding`): the mask's central plane
(the slab position k = 0, interpolated alike) is area-downsampled to every stage, and each stage gives the lesion mean
and its difference to a one-pixel ring around the lesion, ``f = W [l^i; l^i - c^i]_i`` (B, D); a branch whose central
mask plane is empty falls back to the global mean of the slab's features. ``has_roi`` (B,) in the head output
(:meth:`MultiViewFusionNet.region_in_every_view`) says whether the mask's central plane holds region voxels in
every view, i.e. whether every branch was pooled over the region: a mask of two lesions on either side of the patch
centre has its centre of mass between them and no region voxel on any central plane. The multi-view trainers
therefore pass one connected component (:func:`~nnunet_mvext.classification.training_data.central_component`), as
inference does, and weight each sample's loss by ``has_roi`` (for one connected component, every plane through its
centre of mass holds some of it). ``phase_dropout`` drops all views of a phase together (training only);
``absent_phases`` (B, P) marks missing phases at inference: every view of such a phase is left out of the fusion.

There is no segmentation decoder (``decoder = None``): the views do not cover the patch. ``forward_with_classification``
returns ``(None, head output)``, like ``MultiPhaseFusionNet`` with ``segmentation=False``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from dynamic_network_architectures.building_blocks.helper import (
    convert_dim_to_conv_op,
    get_matching_batchnorm,
    get_matching_dropout,
    get_matching_instancenorm,
)
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from nnunet_mvext.architectures.lesion_embedding import LesionEmbedding
from nnunet_mvext.architectures.multiphase_fusion_net import (
    DECODER_ONLY_KWARGS,
    ENCODERS,
    default_phase_channels,
    present_phases,
    validate_phase_channels,
)
from nnunet_mvext.architectures.phase_fusion_heads import build_head
from nnunet_mvext.errors import MVExtError

#: view name -> axis of the preprocessed 3D array (after transpose_forward)
VIEW_AXES = {"axial": 0, "coronal": 1, "sagittal": 2}
DEFAULT_VIEWS = ("axial", "coronal", "sagittal")


def validate_views(views: Sequence[str], view_slices: int, where: str = "trainer_settings") -> list[str]:
    """The view names (known, each once) and an odd ``view_slices`` >= 1; errors name the setting."""
    views = list(views)
    allowed = f"Allowed: a non-empty list of {', '.join(repr(v) for v in VIEW_AXES)}, each at most once."
    if not views:
        raise MVExtError(f"{where}: 'views' is empty. {allowed}")
    for v in views:
        if v not in VIEW_AXES:
            raise MVExtError(f"{where}: 'views' names the unknown view {v!r}. {allowed}")
    if len(set(views)) != len(views):
        raise MVExtError(f"{where}: 'views' names a view twice ({views}). {allowed}")
    if isinstance(view_slices, bool) or not isinstance(view_slices, int) or view_slices < 1 or view_slices % 2 == 0:
        raise MVExtError(f"{where}: 'view_slices' is {view_slices!r}. Allowed: an odd integer >= 1 (the slab is "
                         f"centred on the lesion: one plane, or the plane and (n - 1) / 2 neighbours on each side).")
    return views


def in_plane(values: Sequence, axis: int) -> list:
    """A per-axis triple without the view's ``axis``: ``[v_0, v_1, v_2]`` -> the two in-plane entries in order."""
    return [v for i, v in enumerate(values) if i != axis]


def lesion_centres(roi: Optional[torch.Tensor], spatial_shape: Sequence[int], batch: int,
                   device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Continuous lesion centres (B, 3): the mask's centre of mass, the patch centre ``(S - 1) / 2`` when empty."""
    centre = torch.tensor([(s - 1) / 2 for s in spatial_shape], device=device, dtype=dtype).expand(batch, 3)
    if roi is None:
        return centre.clone()
    m = roi[:, 0].to(dtype)
    mass = m.flatten(1).sum(1)                                                                    # (B,)
    coms = []
    for a in range(3):
        idx = torch.arange(spatial_shape[a], device=device, dtype=dtype)
        marginal = m.sum(dim=[d for d in (1, 2, 3) if d != a + 1])                               # (B, S_a)
        coms.append((marginal * idx).sum(1) / mass.clamp_min(1e-6))
    com = torch.stack(coms, 1)
    return torch.where((mass > 0)[:, None], com, centre)


def extract_slab(x: torch.Tensor, axis: int, centre: torch.Tensor, view_slices: int) -> torch.Tensor:
    """``x`` (B, C, S_0, S_1, S_2), ``centre`` (B,) continuous index along spatial ``axis`` ->
    slab (B, C * n, S_u, S_w), the planes ``centre - h .. centre + h`` linearly interpolated (module docstring).

    The centre is clamped to ``[h, S_axis - 1 - h]``; ``S_axis >= view_slices`` is required.
    """
    b, c = x.shape[:2]
    size = x.shape[2 + axis]
    h = (view_slices - 1) / 2
    if size < view_slices:
        raise MVExtError(f"'view_slices' {view_slices} is more than the patch's {size} planes along axis {axis}.")
    moved = x.movedim(2 + axis, 2)                                                    # (B, C, S_a, S_u, S_w)
    centre = centre.to(x.dtype).clamp(h, size - 1 - h)
    offsets = torch.arange(view_slices, device=x.device, dtype=x.dtype) - h
    pos = centre[:, None] + offsets[None]                                             # (B, n)
    lower = pos.floor().clamp(0, size - 1)
    t = (pos - lower)[:, None, :, None, None]                                         # (B, 1, n, 1, 1)
    i0 = lower.long()
    i1 = (i0 + 1).clamp_max(size - 1)

    def take(index: torch.Tensor) -> torch.Tensor:
        index = index[:, None, :, None, None].expand(b, c, view_slices, *moved.shape[3:])
        return moved.gather(2, index)

    slab = (1 - t) * take(i0) + t * take(i1)                                          # (B, C, n, S_u, S_w)
    return slab.reshape(b, c * view_slices, *moved.shape[3:])


def _norm_2d(norm_op):
    if norm_op is None:
        return None
    if issubclass(norm_op, _InstanceNorm):
        return get_matching_instancenorm(dimension=2)
    if issubclass(norm_op, _BatchNorm):
        return get_matching_batchnorm(dimension=2)
    return norm_op  # GroupNorm, LayerNorm-like ops do not depend on the dimension


def encoder_kwargs_2d(arch_kwargs: dict, axis: int) -> dict:
    """The plan's encoder kwargs for a 2D encoder of the view along ``axis``: 2D ops, kernels and strides of the
    other two axes (see the module docstring)."""
    kw = {k: v for k, v in arch_kwargs.items() if k not in DECODER_ONLY_KWARGS}
    kw["conv_op"] = convert_dim_to_conv_op(2)
    kw["norm_op"] = _norm_2d(kw.get("norm_op"))
    if kw.get("dropout_op") is not None:
        kw["dropout_op"] = get_matching_dropout(dimension=2)
    n = kw["n_stages"]
    for key in ("kernel_sizes", "strides"):
        values = kw[key]
        per_stage = values if isinstance(values, (list, tuple)) else [values] * n
        kw[key] = [in_plane(v, axis) if isinstance(v, (list, tuple)) else [v, v] for v in per_stage]
    return kw


class MultiViewFusionNet(nn.Module):
    """2.5D (phase, view) branches, lesion-pooled, fused by one of the phase-fusion heads (module docstring)."""

    def __init__(self, encoder_class_name: str, arch_kwargs: dict, num_input_channels: int, num_case_classes: int,
                 fusion: str = "abaf", views: Sequence[str] = DEFAULT_VIEWS, view_slices: int = 1,
                 phase_channels: Optional[Sequence[Sequence[int]]] = None, shared_encoder: bool = False,
                 head_options: Optional[dict] = None, lesion_context: str = "ring", phase_dropout: float = 0.0,
                 lesion_mean_only: bool = False):
        super().__init__()
        short = encoder_class_name.split(".")[-1]
        if short not in ENCODERS:
            raise MVExtError(f"The plan's network_class_name '{encoder_class_name}' has no known encoder; allowed: "
                             f"{', '.join(ENCODERS)}.")
        self.views = validate_views(views, view_slices)
        self.view_axes = [VIEW_AXES[v] for v in self.views]
        self.view_slices = view_slices
        groups = validate_phase_channels(default_phase_channels(num_input_channels) if phase_channels is None
                                         else phase_channels,
                                         num_input_channels, shared_encoder)
        self.phase_channels = groups
        self.shared_encoder = shared_encoder
        encoder_class = ENCODERS[short]

        def encoder(channels: int, axis: int):
            kw = encoder_kwargs_2d(arch_kwargs, axis)
            if short == "ResidualEncoderUNet":
                kw.pop("n_conv_per_stage", None)
            return encoder_class(input_channels=channels * view_slices, return_skips=True, **kw)

        # encoders[v] (shared) or encoders[p * V + v]
        if shared_encoder:
            self.encoders = nn.ModuleList([encoder(len(groups[0]), a) for a in self.view_axes])
        else:
            self.encoders = nn.ModuleList([encoder(len(g), a) for g in groups for a in self.view_axes])
        channels = list(self.encoders[0].output_channels)
        self.decoder = None
        self.num_branches = len(groups) * len(self.views)
        self.embedding = LesionEmbedding(channels, self.num_branches, lesion_context,
                                         lesion_mean_only=lesion_mean_only)
        self.embedding_dim = self.embedding.dim
        self.phase_dropout = phase_dropout
        self.head = build_head(fusion, self.num_branches, self.embedding_dim, num_case_classes, **(head_options or {}))
        self.num_case_classes = num_case_classes
        self.fusion = fusion
        self.classification_output = False

    def slabs(self, x: torch.Tensor, roi: Optional[torch.Tensor]) -> tuple[list[torch.Tensor], list]:
        """Per view: the slab of all channels (B, C * n, S_u, S_w) and the mask's central plane (B, 1, S_u, S_w)."""
        if x.ndim != 5:
            raise MVExtError(f"MultiViewFusionNet takes 3D patches (B, C, S_0, S_1, S_2); got shape {tuple(x.shape)}.")
        centres = lesion_centres(roi, x.shape[2:], x.shape[0], x.device, torch.promote_types(x.dtype, torch.float32))
        data, masks = [], []
        for a in self.view_axes:
            data.append(extract_slab(x, a, centres[:, a], self.view_slices))
            masks.append(None if roi is None else extract_slab(roi.to(x.dtype), a, centres[:, a], 1))
        return data, masks

    def branch_embeddings(self, x: torch.Tensor, roi: Optional[torch.Tensor]) -> torch.Tensor:
        """(B, P * V, D): branch ``p * V + v`` is phase p seen in view v."""
        b, n, views = x.shape[0], self.view_slices, len(self.views)
        data, masks = self.slabs(x, roi)
        per_branch = [None] * self.num_branches
        for v in range(views):
            # the slab's channels are (channel, slice) in channel-major order
            slab = data[v].reshape(b, x.shape[1], n, *data[v].shape[2:])
            inputs = [slab[:, g].flatten(1, 2) for g in self.phase_channels]               # (B, |g| n, S_u, S_w)
            if self.shared_encoder:
                p = len(inputs)
                skips = self.encoders[v](torch.cat(inputs, 0))                             # phases folded: (P B, ...)
                mask = None if masks[v] is None else masks[v].repeat(p, 1, 1, 1)
                pooled = self.embedding.pooled(skips, mask)[0]
                for i, e in enumerate(pooled.split(b, 0)):
                    per_branch[i * views + v] = e
            else:
                for i, inp in enumerate(inputs):
                    skips = self.encoders[i * views + v](inp)
                    per_branch[i * views + v] = self.embedding.pooled(skips, masks[v])[0]
        return self.embedding.project(torch.stack(per_branch, 1))

    def forward_with_classification(self, x: torch.Tensor, roi: Optional[torch.Tensor] = None,
                                    absent_phases: Optional[torch.Tensor] = None):
        """``x`` (B, C, *S), ``roi`` (B, 1, *S) lesion mask or None, ``absent_phases`` (B, P) bool or None ->
        (None, head output)."""
        embeddings = self.branch_embeddings(x, roi)
        present = present_phases(x.shape[0], len(self.phase_channels), absent_phases, x.device,
                                 self.phase_dropout if self.training else 0.0)
        present = present.repeat_interleave(len(self.views), dim=1)                       # (B, P * V), phase-major
        head = self.head(embeddings * present.unsqueeze(2).to(embeddings.dtype), present)
        head["has_roi"] = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device) if roi is None else \
            self.region_in_every_view(roi)
        return None, head

    def region_in_every_view(self, roi: torch.Tensor) -> torch.Tensor:
        """(B,) bool: the mask's central plane (the one the branches pool over) holds region voxels in every view.
        ``roi`` (B, 1, S_0, S_1, S_2)."""
        centres = lesion_centres(roi, roi.shape[2:], roi.shape[0], roi.device)
        planes = [extract_slab(roi.float(), a, centres[:, a], 1) for a in self.view_axes]
        return torch.stack([p.flatten(1).sum(1) > 0 for p in planes], 1).all(1)

    def forward(self, x: torch.Tensor, roi: Optional[torch.Tensor] = None,
                absent_phases: Optional[torch.Tensor] = None):
        if self.classification_output:
            return self.forward_with_classification(x, roi, absent_phases)
        raise MVExtError("A multi-view fusion network has no segmentation output (its 2D views do not cover the "
                         "patch); use nnunet-mvext predict-cls --roi.")

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """Conv-output voxels of one forward pass (batch 1): each branch's 2D encoder on its view's in-plane size."""
        if len(input_size) != 3:
            raise MVExtError(f"MultiViewFusionNet takes 3D patch sizes; got {list(input_size)}.")
        per_view = [self.encoders[v].compute_conv_feature_map_size(in_plane(input_size, a))
                    for v, a in enumerate(self.view_axes)]
        return np.int64(len(self.phase_channels) * sum(int(s) for s in per_view))

    @staticmethod
    def initialize(module):
        InitWeights_He(1e-2)(module)
