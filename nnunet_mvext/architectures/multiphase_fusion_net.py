"""``MultiPhaseFusionNet``: one nnU-Net encoder branch per contrast phase, lesion-pooled embeddings fused for the
case class, and a U-Net decoder on the phase-fused skips for the segmentation.

Input ``x`` (B, C, *S) with the phases as nnU-Net channels; ``phase_channels`` groups channels into P phases
(default: one channel per phase). Each phase p goes through an encoder built from the plan (``PlainConvEncoder``
for ``PlainConvUNet`` plans, ``ResidualEncoder`` for ``ResidualEncoderUNet`` plans) giving skips ``s_p^i``
(B, C_i, *S_i).

- separate weights (default): P encoders;
- ``shared_encoder=True``: one encoder, phases folded into the batch, (B, P*c, *S) -> (B*P, c, *S): one call;
  with ``phase_norm=True`` its normalisation layers keep one affine pair per phase (:mod:`.phase_norm`);
- ``shared_encoder=True, phase_specific_stages=k`` (0 < k < number of stages): stages 0..k-1 (and a residual
  encoder's stem) one copy per phase, stages k.. shared: the phase-specific skips of stage k-1 (B, P, C, *S) are
  folded into the batch (B*P, C, *S) for the shared stages. The compute is that of P encoders either way; the
  parameters of the shared stages are one set (a plain 8/16/32 encoder keeps about 80 % of its weights in its last
  stage).

**Lesion embedding.** With a region-of-interest mask ``m`` (B, 1, *S) (the lesion: ground truth in training, the
predicted lesion at inference), every stage of each phase is pooled over the lesion and over a ring around it, and
the phase embedding is ``f_p = W_p [l_p^i; l_p^i - c_p^i]_i`` (B, D) (:mod:`.lesion_embedding`, which states the
equations and why). ``lesion_context="patch"`` compares the lesion with the whole patch instead of the ring. A sample
whose mask is empty (or no mask given) falls back to the global mean of each stage; ``has_roi`` (B,) in the head
output flags which samples were pooled over their region. ``patch_pooling=True`` (trainer setting
``protocol_ablation``, for ablation studies) ignores the region, as the first release did.
``classification_encoder_width=w`` (> 0, with a decoder and per-phase encoders): the embedding pools a separate
encoder instead, one for all phases (folded into the batch, as ``shared_encoder``). It starts at the plan's second
resolution: the input is average-pooled by the plan's first downsampling (the product of the strides of stages 0
and 1), then the plan's stages 1..n-1 follow (their kernel sizes, convolutions per stage and later strides) with
``round(w * C_i)`` channels (at least 1). The segmentation encoders then receive only the segmentation loss's
gradient, the classification encoder only the classification loss's: one encoder shared by the phases reads the case
class better, one per phase segments better (``benchmarks/RESULTS.md``). Why not the full resolution: a second
full-resolution pass of the folded phases was far slower than its convolutions' share in development timings on
2 CPU cores (thin full-resolution layers are memory-bound; those timings are not a benchmark row, the layout built
here is: ``benchmarks/fusion_memory.py --encoders cls_encoder``). ``forward(x)`` (segmentation only,
``nnUNetv2_predict``) does not run it.
``input_contrast=True`` adds the input itself as a stage 0 of the embedding: each phase's lesion mean and lesion
minus ring of its (nnU-Net-normalised) intensities, the first-order statistics of the feature oracle, before any
convolution (phases of equal channel count).
``phase_dropout`` q (training only): each phase's embedding of each sample is replaced by zeros with probability q
(at least one phase kept per sample), so that the head does not rely on one phase alone and tolerates a missing
phase at inference (``absent_phases``).

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

from nnunet_mvext.architectures.lesion_embedding import LesionEmbedding
from nnunet_mvext.architectures.phase_fusion_heads import build_head
from nnunet_mvext.architectures.phase_norm import PhaseConditionedNorm
from nnunet_mvext.errors import MVExtError

ENCODERS = {"PlainConvUNet": PlainConvEncoder, "ResidualEncoderUNet": ResidualEncoder}
DECODER_ONLY_KWARGS = ("n_conv_per_stage_decoder", "deep_supervision", "num_classes")
#: version of the network layout stored with trained models; 1: whole-patch mean embedding (first release);
#: 2: lesion mean of the last two stages; 3: lesion against its surroundings at every stage (:mod:`.lesion_embedding`)
NETWORK_VERSION = 3
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def phase_dropout_mask(present: torch.Tensor, probability: float) -> torch.Tensor:
    """Phase dropout: ``present`` (B, P) bool with each present phase dropped with ``probability``; every sample
    keeps at least one of its present phases (a random one, if the draw dropped them all; weight exactly 0 on the
    absent ones, so the fallback never brings back a phase the case lacks). A sample without any present phase stays
    so."""
    b, p = present.shape
    if probability <= 0 or p < 2:
        return present
    keep = present & (torch.rand(b, p, device=present.device) >= probability)
    any_present = present.any(1, keepdim=True)
    weights = torch.where(any_present, present, torch.ones_like(present)).float()    # multinomial needs a row sum > 0
    fallback = torch.multinomial(weights, 1)[:, 0]                                     # a random present phase
    forced = F.one_hot(fallback, p).bool() & present
    return torch.where(keep.any(1, keepdim=True), keep, forced)


def present_phases(batch: int, num_phases: int, absent_phases: Optional[torch.Tensor], device: torch.device,
                   dropout: float = 0.0) -> torch.Tensor:
    """(B, P) bool, True where a phase enters the fusion: not marked in ``absent_phases`` (B, P) (a sample whose
    every phase is marked keeps them all: a softmax over none is undefined), then :func:`phase_dropout_mask` with
    ``dropout`` (pass 0 outside training)."""
    present = torch.ones(batch, num_phases, dtype=torch.bool, device=device)
    if absent_phases is not None:
        present = present & ~absent_phases.to(device=device, dtype=torch.bool)
        present = torch.where(present.any(1, keepdim=True), present, torch.ones_like(present))
    return phase_dropout_mask(present, dropout)


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
                 segmentation: bool = True, patch_pooling: bool = False, lesion_context: str = "ring",
                 phase_dropout: float = 0.0, lesion_mean_only: bool = False, phase_norm: bool = False,
                 phase_specific_stages: int = 0, input_contrast: bool = False,
                 classification_encoder_width: float = 0.0):
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
        kw = self.encoder_kwargs(short, arch_kwargs)
        if phase_norm and not shared_encoder:
            raise MVExtError("'phase_norm' needs 'shared_encoder' (one encoder per phase has its own norms already).")
        decoder_norm = {"norm_op": kw.get("norm_op"), "norm_op_kwargs": dict(kw.get("norm_op_kwargs") or {})}
        if phase_norm and kw.get("norm_op") is None:
            raise MVExtError(f"'phase_norm' needs a normalisation in the plan; its 'norm_op' is {kw.get('norm_op')}.")
        if phase_norm:
            kw["norm_op_kwargs"] = {"norm_op": kw["norm_op"], "num_phases": len(groups),
                                    **(kw.get("norm_op_kwargs") or {})}
            kw["norm_op"] = PhaseConditionedNorm
        self.phase_norm = phase_norm
        n_stages = int(kw["n_stages"])
        if phase_specific_stages and not (shared_encoder and 0 < phase_specific_stages < n_stages):
            raise MVExtError(f"'phase_specific_stages' {phase_specific_stages} needs 'shared_encoder' and a value in "
                             f"[0, {n_stages - 1}] for this {n_stages}-stage plan (at least one stage shared).")
        if phase_norm and phase_specific_stages:
            raise MVExtError("'phase_norm' and 'phase_specific_stages' are not combined: the phase-specific stages see "
                             "one phase at a time, a batch the per-phase norms cannot split.")
        self.phase_specific_stages = int(phase_specific_stages)
        encoder_class = ENCODERS[short]

        def encoder(channels: int):
            return encoder_class(input_channels=channels, return_skips=True, **kw)

        n_enc = len(groups) if not shared_encoder or phase_specific_stages else 1
        self.encoders = nn.ModuleList([encoder(len(groups[i])) for i in range(n_enc)])
        if self.phase_specific_stages:
            # encoders[0] holds every stage (its stages k.. are the shared ones, and the decoder reads its layout);
            # the other phases keep only their own stages 0..k-1: nothing without a gradient
            for enc in self.encoders[1:]:
                del enc.stages[self.phase_specific_stages:]
        template = self.encoders[0]
        conv_op = template.conv_op
        self.classification_encoder, self.classification_pool = None, None
        if classification_encoder_width:
            if shared_encoder or not segmentation or len({len(g) for g in groups}) != 1:
                raise MVExtError("'classification_encoder_width' needs one encoder per phase ('shared_encoder' false), "
                                 "a decoder ('segmentation' true) and phases of equal size; got shared_encoder "
                                 f"{shared_encoder}, segmentation {segmentation}, phase_channels {groups}.")
            if n_stages < 2:
                raise MVExtError("'classification_encoder_width' needs a plan with at least 2 stages (the "
                                 "classification encoder starts at the second resolution).")
            self.classification_encoder, self.classification_pool = self._classification_encoder(
                encoder_class, kw, len(groups[0]), classification_encoder_width)
        self.classification_encoder_width = float(classification_encoder_width)
        channels = list(template.output_channels)
        self.skip_fusion, self.decoder = None, None
        if segmentation:
            self.skip_fusion = nn.ModuleList([conv_op(c * len(groups), c, 1, bias=True) for c in channels])
            self.decoder = UNetDecoder(template, num_seg_classes, arch_kwargs["n_conv_per_stage_decoder"],
                                       deep_supervision, **decoder_norm)  # the fused skips: (B, ...), plan's norm
        if input_contrast and len({len(g) for g in groups}) != 1:
            raise MVExtError(f"'input_contrast' needs phases of equal size; 'phase_channels' is {groups}.")
        self.input_contrast = input_contrast
        pooled = channels if self.classification_encoder is None else list(self.classification_encoder.output_channels)
        embedded = ([len(groups[0])] if input_contrast else []) + pooled
        self.embedding = LesionEmbedding(embedded, len(groups), lesion_context, patch_pooling, lesion_mean_only)
        self.embedding_dim = self.embedding.dim
        self.head = build_head(fusion, len(groups), self.embedding_dim, num_case_classes, **(head_options or {}))
        self.num_case_classes = num_case_classes
        self.fusion = fusion
        self.patch_pooling = patch_pooling
        self.phase_dropout = phase_dropout
        self.classification_output = False

    def phase_skips(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-stage skips with the phases stacked: stage i -> (B, P, C_i, *S_i)."""
        b, p = x.shape[0], len(self.phase_channels)
        if self.phase_specific_stages:
            return self._partly_shared_skips(x)
        if self.shared_encoder:
            folded = self.phase_inputs(x).flatten(0, 1)
            return [s.reshape(b, p, *s.shape[1:]) for s in self.encoders[0](folded)]
        per_phase = [enc(x[:, g]) for enc, g in zip(self.encoders, self.phase_channels)]
        return [torch.stack(stage, dim=1) for stage in zip(*per_phase)]

    @staticmethod
    def encoder_kwargs(short_class_name: str, arch_kwargs: dict) -> dict:
        """The plan's ``arch_kwargs`` that its encoder class takes (the decoder's keys removed)."""
        kw = {k: v for k, v in arch_kwargs.items() if k not in DECODER_ONLY_KWARGS}
        if short_class_name == "ResidualEncoderUNet":
            kw.pop("n_conv_per_stage", None)
        return kw

    @staticmethod
    def classification_encoder_feature_map_size(encoder_class_name: str, arch_kwargs: dict, input_size: Sequence[int],
                                                num_phases: int, width: float) -> np.int64:
        """nnU-Net's estimate of the classification encoder (``classification_encoder_width`` > 0) for
        ``num_phases`` single-channel phases at the patch ``input_size``; build on the meta device."""
        short = encoder_class_name.split(".")[-1]
        encoder, pool = MultiPhaseFusionNet._classification_encoder(
            ENCODERS[short], MultiPhaseFusionNet.encoder_kwargs(short, arch_kwargs), 1, width)
        return np.int64(encoder.compute_conv_feature_map_size([i // j for i, j in zip(input_size, pool)]) * num_phases)

    @staticmethod
    def _classification_encoder(encoder_class, kw: dict, in_channels: int, width: float):
        """The plan's stages 1..n-1 at ``width`` x their channels, and the input pooling (the strides of stages 0
        and 1 multiplied per axis) that takes the input to stage 1's resolution."""
        n = int(kw["n_stages"])
        per_stage = {k: list(v) if isinstance(v, (list, tuple)) else [v] * n for k, v in kw.items()
                     if k in ("features_per_stage", "kernel_sizes", "strides", "n_conv_per_stage",
                              "n_blocks_per_stage")}
        strides = [[s] * len(per_stage["kernel_sizes"][0]) if isinstance(s, int) else list(s)
                   for s in per_stage["strides"]]
        pool = [a * b for a, b in zip(strides[0], strides[1])]
        sub = {k: v[1:] for k, v in per_stage.items()}
        sub["features_per_stage"] = [max(1, int(round(c * width))) for c in sub["features_per_stage"]]
        sub["strides"] = [[1] * len(pool)] + strides[2:]
        encoder = encoder_class(input_channels=in_channels, return_skips=True, **{**kw, **sub, "n_stages": n - 1})
        return encoder, tuple(pool)

    def classification_skips(self, x: torch.Tensor, skips: list[torch.Tensor]) -> list[torch.Tensor]:
        """The skips the embedding pools (stage i: (B, P, C_i, *S_i)): the segmentation encoders' ``skips``, or the
        separate classification encoder's on the folded phases."""
        if self.classification_encoder is None:
            return skips
        b, p = x.shape[0], len(self.phase_channels)
        folded = self.phase_inputs(x).flatten(0, 1)
        pooled = _AVG_POOL[folded.ndim - 2](folded, self.classification_pool, self.classification_pool)
        return [s.reshape(b, p, *s.shape[1:]) for s in self.classification_encoder(pooled)]

    def phase_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The input with the phases stacked, (B, C, *S) -> (B, P, c, *S) (phases of equal size c)."""
        index = torch.tensor([c for g in self.phase_channels for c in g], device=x.device)
        return x.index_select(1, index).reshape(x.shape[0], len(self.phase_channels), -1, *x.shape[2:])

    def _partly_shared_skips(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Stages 0..k-1 per phase, then the shared stages on the folded (B*P, C, *S) batch (the encoders' own
        ``forward`` runs every stage, so their stem and stages are called here in the same order)."""
        b, p, k = x.shape[0], len(self.phase_channels), self.phase_specific_stages
        fronts = []
        for enc, g in zip(self.encoders, self.phase_channels):
            h, skips = x[:, g], []
            if getattr(enc, "stem", None) is not None:
                h = enc.stem(h)
            for stage in enc.stages[:k]:
                h = stage(h)
                skips.append(h)
            fronts.append(skips)
        stacked = [torch.stack(stage, dim=1) for stage in zip(*fronts)]
        h = stacked[-1].flatten(0, 1)
        for stage in self.encoders[0].stages[k:]:
            h = stage(h)
            stacked.append(h.reshape(b, p, *h.shape[1:]))
        return stacked

    def phase_embeddings(self, skips: list[torch.Tensor], roi: Optional[torch.Tensor]):
        """Lesion embeddings (B, P, D) and ``has_roi`` (B,) from the phase-stacked skips
        (stage i: (B, P, C_i, *S_i))."""
        b, p = skips[-1].shape[:2]
        roi_folded = None if roi is None else roi.repeat_interleave(p, dim=0)
        pooled, has_roi = self.embedding.pooled([s.flatten(0, 1) for s in skips], roi_folded)  # (B*P, 2 sum C_i)
        return self.embedding.project(pooled.reshape(b, p, -1)), has_roi.reshape(b, p)[:, 0]

    def forward_with_classification(self, x: torch.Tensor, roi: Optional[torch.Tensor] = None,
                                    absent_phases: Optional[torch.Tensor] = None):
        """``x`` (B, C, *S), ``roi`` (B, 1, *S) region mask or None, ``absent_phases`` (B, P) bool or None (phases
        whose series is missing: their embedding is zero, as in phase dropout) -> (segmentation or None, head
        output)."""
        skips = self.phase_skips(x)
        pooled = self.classification_skips(x, skips)
        embeddings, has_roi = self.phase_embeddings([self.phase_inputs(x)] + pooled if self.input_contrast else pooled,
                                                    roi)
        b, p = embeddings.shape[:2]
        present = present_phases(b, p, absent_phases, embeddings.device,
                                 self.phase_dropout if self.training else 0.0)
        head = self.head(embeddings * present.unsqueeze(2).to(embeddings.dtype), present)
        head["has_roi"] = has_roi
        if self.decoder is None:
            return None, head
        fused = [fuse(s.flatten(1, 2)) for fuse, s in zip(self.skip_fusion, skips)]
        return self.decoder(fused), head

    def forward(self, x: torch.Tensor, roi: Optional[torch.Tensor] = None,
                absent_phases: Optional[torch.Tensor] = None):
        if self.classification_output:
            return self.forward_with_classification(x, roi, absent_phases)
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
        if self.classification_encoder is not None:
            pooled_size = [i // j for i, j in zip(input_size, self.classification_pool)]
            enc += self.classification_encoder.compute_conv_feature_map_size(pooled_size) * p
        if self.decoder is None:
            return np.int64(enc)
        return np.int64(enc + fusion + self.decoder.compute_conv_feature_map_size(input_size))

    @staticmethod
    def initialize(module):
        InitWeights_He(1e-2)(module)
