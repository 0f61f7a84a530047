"""``MultiPhaseFusionNet``: one nnU-Net encoder branch per contrast phase, lesion-pooled embeddings fused for the
case class, and a U-Net decoder on the phase-fused skips for the segmentation.

Input ``x`` (B, C, *S) with the phases as nnU-Net channels; ``phase_channels`` groups channels into P phases
(default: one channel per phase). Each phase p goes through an encoder built from the plan (``PlainConvEncoder``
for ``PlainConvUNet`` plans, ``ResidualEncoder`` for ``ResidualEncoderUNet`` plans) giving skips ``s_p^i``
(B, C_i, *S_i).

- separate weights (default): P encoders;
- ``shared_encoder=True``: one encoder, phases folded into the batch, (B, P*c, *S) -> (B*P, c, *S): one call.

**Lesion-pooled embedding.** With a region-of-interest mask ``m`` (B, 1, *S) (the lesion: ground truth in training,
the predicted lesion at inference), each of the last two stages is pooled over the region::

    w^i   = area_downsample(m, S_i)                         (B, 1, *S_i)  fraction of each voxel in the region
    e_p^i = sum_v w^i_v s_p^i_v / sum_v w^i_v               (B, C_i)
    f_p   = [e_p^{n-1}; e_p^{n-2}]                          (B, D),  D = C_{n-1} + C_{n-2}

The first release averaged the instance-normalised bottleneck over the whole patch, which measured about 0.39 per
channel whatever the input: the lesion is a small part of a patch. Two scales keep a lesion that shrinks below one
bottleneck voxel visible. A sample whose mask is empty (or no mask given) falls back to the global mean of each
stage; ``has_roi`` (B,) in the head output flags which samples were pooled over their region.
``patch_pooling=True`` (trainer setting ``protocol_ablation``, for ablation studies) ignores the region and pools
both stages over the whole patch, as the first release did (which pooled the bottleneck alone).

Segmentation: skips fused per stage by a 1x1 conv, ``s^i = W_i [s_1^i; ...; s_P^i]`` (B, C_i, *S_i), then nnU-Net's
``UNetDecoder``. ``forward(x)`` returns the segmentation output exactly like ``PlainConvUNet`` (so nnU-Net's
trainer loop, ``nnUNetv2_predict`` and its sliding window work unchanged); ``forward_with_classification(x, roi)``
returns ``(segmentation, head_output)`` with the head output of :mod:`phase_fusion_heads`. While the attribute
``classification_output`` is True, ``forward(x, roi)`` returns that pair too: the trainer sets it for its training
step so that the call goes through DDP's ``forward`` (gradient synchronisation), and resets it afterwards.
``segmentation=False`` builds no skip fusion and no decoder (classification only): the segmentation output is then
None and a plain ``forward`` raises an error saying so.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from dynamic_network_architectures.building_blocks.helper import convert_conv_op_to_dim
from dynamic_network_architectures.building_blocks.plain_conv_encoder import PlainConvEncoder
from dynamic_network_architectures.building_blocks.residual_encoders import ResidualEncoder
from dynamic_network_architectures.building_blocks.unet_decoder import UNetDecoder
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn

from nnunet_mvext.architectures.phase_fusion_heads import build_head
from nnunet_mvext.errors import MVExtError

ENCODERS = {"PlainConvUNet": PlainConvEncoder, "ResidualEncoderUNet": ResidualEncoder}
DECODER_ONLY_KWARGS = ("n_conv_per_stage_decoder", "deep_supervision", "num_classes")
#: version of the network layout stored with trained models; 1: whole-patch mean embedding (first release)
NETWORK_VERSION = 2
POOLED_STAGES = 2


def roi_pool(features: torch.Tensor, roi: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of ``features`` (N, C, *S_i) over the region ``roi`` (N, 1, *S) -> ((N, C), has_roi (N,) bool).

    ``roi`` is area-downsampled to ``S_i`` (a soft mask); samples with an empty region get the global mean.
    """
    spatial = tuple(range(2, features.ndim))
    global_mean = features.mean(dim=spatial)
    if roi is None:
        return global_mean, torch.zeros(features.shape[0], dtype=torch.bool, device=features.device)
    w = F.interpolate(roi.to(features.dtype), size=features.shape[2:], mode="area")
    mass = w.sum(dim=spatial)                                                      # (N, 1)
    has_roi = mass[:, 0] > 0
    pooled = (features * w).sum(dim=spatial) / mass.clamp_min(1e-6)
    return torch.where(has_roi[:, None], pooled, global_mean), has_roi


def default_phase_channels(num_input_channels: int) -> list[list[int]]:
    return [[c] for c in range(num_input_channels)]


def validate_phase_channels(phase_channels: Sequence[Sequence[int]], num_input_channels: int,
                            shared_encoder: bool, where: str = "trainer_settings") -> list[list[int]]:
    """The channel groups, each channel of ``0..num_input_channels-1`` at most once; errors name the channel."""
    groups = [list(g) for g in phase_channels]
    allowed = (f"Allowed: groups of the input channels 0..{num_input_channels - 1}, each channel at most once "
               f"(channels left out are not used; one group gives a single-phase model).")
    if not groups:
        raise MVExtError(f"{where}: 'phase_channels' is empty. {allowed}")
    seen = set()
    for g, group in enumerate(groups):
        for c in group:
            if not 0 <= c < num_input_channels:
                raise MVExtError(f"{where}: 'phase_channels' group {g} {group} names channel {c}, but the dataset has "
                                 f"{num_input_channels} channel(s). {allowed}")
            if c in seen:
                raise MVExtError(f"{where}: 'phase_channels' names channel {c} twice ({groups}). {allowed}")
            seen.add(c)
    if shared_encoder and len({len(g) for g in groups}) != 1:
        raise MVExtError(f"{where}: 'shared_encoder' needs phases of equal size; 'phase_channels' is {groups}.")
    return groups


class MultiPhaseFusionNet(nn.Module):
    def __init__(self, encoder_class_name: str, arch_kwargs: dict, num_input_channels: int, num_seg_classes: int,
                 num_case_classes: int, fusion: str = "abaf", phase_channels: Optional[Sequence[Sequence[int]]] = None,
                 shared_encoder: bool = False, deep_supervision: bool = True, head_options: Optional[dict] = None,
                 segmentation: bool = True, patch_pooling: bool = False):
        super().__init__()
        short = encoder_class_name.split(".")[-1]
        if short not in ENCODERS:
            raise MVExtError(f"The plan's network_class_name '{encoder_class_name}' has no known encoder; allowed: "
                             f"{', '.join(ENCODERS)}.")
        groups = validate_phase_channels(default_phase_channels(num_input_channels) if phase_channels is None
                                         else phase_channels,
                                         num_input_channels, shared_encoder)
        self.phase_channels = groups
        self.shared_encoder = shared_encoder
        kw = {k: v for k, v in arch_kwargs.items() if k not in DECODER_ONLY_KWARGS}
        if short == "ResidualEncoderUNet":
            kw.pop("n_conv_per_stage", None)
        encoder_class = ENCODERS[short]

        def encoder(channels: int):
            return encoder_class(input_channels=channels, return_skips=True, **kw)

        n_enc = 1 if shared_encoder else len(groups)
        self.encoders = nn.ModuleList([encoder(len(groups[i])) for i in range(n_enc)])
        template = self.encoders[0]
        conv_op = template.conv_op
        channels = list(template.output_channels)
        self.skip_fusion, self.decoder = None, None
        if segmentation:
            self.skip_fusion = nn.ModuleList([conv_op(c * len(groups), c, 1, bias=True) for c in channels])
            self.decoder = UNetDecoder(template, num_seg_classes, arch_kwargs["n_conv_per_stage_decoder"],
                                       deep_supervision)
        self.pooled_stages = min(POOLED_STAGES, len(channels))
        self.embedding_dim = sum(channels[-self.pooled_stages:])
        self.head = build_head(fusion, len(groups), self.embedding_dim, num_case_classes, **(head_options or {}))
        self.num_case_classes = num_case_classes
        self.fusion = fusion
        self.patch_pooling = patch_pooling
        self.classification_output = False

    def phase_skips(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-stage skips with the phases stacked: stage i -> (B, P, C_i, *S_i)."""
        b, p = x.shape[0], len(self.phase_channels)
        if self.shared_encoder:
            index = torch.tensor([c for g in self.phase_channels for c in g], device=x.device)
            folded = x.index_select(1, index).reshape(b * p, -1, *x.shape[2:])
            return [s.reshape(b, p, *s.shape[1:]) for s in self.encoders[0](folded)]
        per_phase = [enc(x[:, g]) for enc, g in zip(self.encoders, self.phase_channels)]
        return [torch.stack(stage, dim=1) for stage in zip(*per_phase)]

    def phase_embeddings(self, skips: list[torch.Tensor], roi: Optional[torch.Tensor]):
        """Lesion-pooled embeddings (B, P, D) and ``has_roi`` (B,) from the phase-stacked skips."""
        b, p = skips[-1].shape[:2]
        roi_folded = None if roi is None or self.patch_pooling else roi.repeat_interleave(p, dim=0)
        parts, has_roi = [], None
        for s in skips[-self.pooled_stages:]:
            pooled, has_roi = roi_pool(s.flatten(0, 1), roi_folded)                 # (B*P, C_i)
            parts.append(pooled.reshape(b, p, -1))
        return torch.cat(parts, dim=2), has_roi.reshape(b, p)[:, 0]

    def forward_with_classification(self, x: torch.Tensor, roi: Optional[torch.Tensor] = None):
        """``x`` (B, C, *S), ``roi`` (B, 1, *S) region mask or None -> (segmentation or None, head output)."""
        skips = self.phase_skips(x)
        embeddings, has_roi = self.phase_embeddings(skips, roi)
        head = self.head(embeddings)
        head["has_roi"] = has_roi
        if self.decoder is None:
            return None, head
        fused = [fuse(s.flatten(1, 2)) for fuse, s in zip(self.skip_fusion, skips)]
        return self.decoder(fused), head

    def forward(self, x: torch.Tensor, roi: Optional[torch.Tensor] = None):
        if self.classification_output:
            return self.forward_with_classification(x, roi)
        if self.decoder is None:
            raise MVExtError("This fusion network was trained with trainer_settings 'segmentation': false and has no "
                             "segmentation output; use nnunet-mvext predict-cls.")
        skips = self.phase_skips(x)
        return self.decoder([fuse(s.flatten(1, 2)) for fuse, s in zip(self.skip_fusion, skips)])

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        assert len(input_size) == convert_conv_op_to_dim(self.encoders[0].conv_op)
        p = len(self.phase_channels)
        enc = self.encoders[0].compute_conv_feature_map_size(input_size) * p
        size, fusion = list(input_size), np.int64(0)
        for c, s in zip(self.encoders[0].output_channels, self.encoders[0].strides):
            size = [i // j for i, j in zip(size, s)]
            fusion += np.prod([c, *size], dtype=np.int64)
        if self.decoder is None:
            return np.int64(enc)
        return np.int64(enc + fusion + self.decoder.compute_conv_feature_map_size(input_size))

    @staticmethod
    def initialize(module):
        InitWeights_He(1e-2)(module)
