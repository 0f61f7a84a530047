"""Fusion heads over per-phase lesion embeddings ``f_p`` (B, D), p = 1..P, K case classes.

- :class:`ConcatHead` (feature-level fusion): ``logits = MLP([f_1; ...; f_P])``; loss ``CE(logits, y)``.
- :class:`DSNHead` (deep supervision per phase): concat head plus ``aux_p = W_p f_p``;
  loss ``CE(logits, y) + lambda * mean_p CE(aux_p, y)``. With the default ``lambda = 1`` DSN is ABAF with uniform
  ``beta = 1/P`` and no gates, so the two are comparable; the seed (000) sums the auxiliary losses with weight 1
  each, which is ``lambda = P`` here.
- :class:`ABAFHead` (attention-based adaptive fusion, after Li et al., "Adaptive Multimodal Fusion With Attention
  Guided Deep Supervision Net for Grading Hepatocellular Carcinoma", IEEE JBHI 2022, and seed 000)::

      alpha_p = sigmoid(W_p [f_1; ...; f_P])      (B, D)   per-sample gates
      g_p     = alpha_p * f_p                       (B, D)
      s_p     = u . g_p                             (B, P)   learned scoring vector u (D,), one for all phases
      beta    = softmax_p(s)                        (B, P)   per-sample phase weights, sum_p beta = 1
      logits  = MLP([beta_1 g_1; ...; beta_P g_P])  (B, K)   the prediction uses the attention
      aux_p   = V_p g_p                             (B, K)
      loss    = mean_b [ CE(logits_b, y_b) + sum_p beta_bp * CE(aux_pb, y_b) ]

  The seed scores with the plain sum over D (``u = 1``); the first release used the mean (``u = 1/D``), which kept
  beta within about 0.42/0.29/0.29 for three phases whatever the input. ``u`` is initialised to the mean and
  learned, so its scale (an inverse temperature) can grow until beta is near one-hot. Logits go to
  ``cross_entropy`` unnormalised (the seed applied softmax first, i.e. softmax twice). ``detach_beta`` (default
  false, as the paper and the seed) makes beta a constant in the auxiliary term, so that only ``CE(logits)`` trains
  the attention.
- :class:`DecisionHead` (decision-level fusion, seed 001: one classifier per phase, outputs combined by weights)::

      aux_p   = V_p f_p                                  (B, K)   one classifier per phase, each supervised
      beta    = softmax_p(w)                             (P,)     learned global phase weights
      logits  = sum_p beta_p log_softmax(aux_p)          (B, K)   a weighted product of the phases' posteriors
      loss    = CE(logits, y) + mean_p CE(aux_p, y)

  The weights are global (one per phase), as in the seed; they are reported per case as the ``beta`` columns
  (identical rows). Per-sample weights were not measured.

Every head takes the phase embeddings ``f`` (B, P, D) and ``present`` (B, P) bool (phases dropped by phase dropout
in training, or missing at inference, are False; their embedding is zero): ABAF's beta and the decision weights are
a softmax over the present phases only (beta of an absent phase is 0), and the auxiliary losses average over the
present phases. Every head returns a dict: ``logits`` (B, K), ``aux_logits`` (B, P, K) or None, ``beta`` (B, P) or
None, ``embedding`` (B, P*D), the fused feature (for t-SNE), and ``present``.
``loss(out, y, class_weights, sample_weights)`` averages over
the samples with ``sample_weights`` (B,) (1 for samples whose patch holds the region of interest, 0 otherwise); a
batch without any such sample gives a zero loss that still reaches every parameter (DDP needs every parameter in
the graph).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from nnunet_mvext.errors import MVExtError

FUSION_MODES = ("concat", "dsn", "abaf", "decision")


def _mlp(in_features: int, hidden: int, num_classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, hidden), nn.LeakyReLU(inplace=True), nn.Dropout(dropout),
                         nn.Linear(hidden, num_classes))


def _ce(logits: torch.Tensor, y: torch.Tensor, class_weights: Optional[torch.Tensor],
        label_smoothing: float = 0.0) -> torch.Tensor:
    """Per-sample cross-entropy (B,) in fp32 with optional class weights and label smoothing."""
    return F.cross_entropy(logits.float(), y, weight=class_weights, reduction="none", label_smoothing=label_smoothing)


def _present(f: torch.Tensor, present: Optional[torch.Tensor]) -> torch.Tensor:
    return torch.ones(f.shape[:2], dtype=torch.bool, device=f.device) if present is None else present.bool()


def _mean_over_present(per_phase: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """(B, P) -> (B,): the mean over each sample's present phases."""
    w = present.to(per_phase.dtype)
    return (per_phase * w).sum(1) / w.sum(1).clamp_min(1.0)


def _masked_softmax(scores: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Softmax over the phases (B, P) with absent phases at weight 0, in fp32."""
    return torch.softmax(scores.float().masked_fill(~present, float("-inf")), dim=1)


def _weighted_mean(per_sample: torch.Tensor, sample_weights: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean of (B,) over the samples with weight > 0; zero (still in the graph) when there is none."""
    if sample_weights is None:
        return per_sample.mean()
    w = sample_weights.to(per_sample.dtype)
    return (per_sample * w).sum() / w.sum().clamp_min(1.0)


class ConcatHead(nn.Module):
    def __init__(self, num_phases: int, dim: int, num_classes: int, dropout: float = 0.2,
                 label_smoothing: float = 0.0, **_):
        super().__init__()
        self.classifier = _mlp(num_phases * dim, dim, num_classes, dropout)
        self.label_smoothing = label_smoothing

    def forward(self, f: torch.Tensor, present: Optional[torch.Tensor] = None) -> dict:
        """``f`` (B, P, D), ``present`` (B, P) bool or None (all present)."""
        fused = f.flatten(1)
        return {"logits": self.classifier(fused), "aux_logits": None, "beta": None, "embedding": fused,
                "present": _present(f, present)}

    def per_sample_loss(self, out: dict, y: torch.Tensor, class_weights: Optional[torch.Tensor]) -> torch.Tensor:
        return _ce(out["logits"], y, class_weights, self.label_smoothing)

    def loss(self, out: dict, y: torch.Tensor, class_weights: Optional[torch.Tensor] = None,
             sample_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        return _weighted_mean(self.per_sample_loss(out, y, class_weights), sample_weights)


class DSNHead(ConcatHead):
    def __init__(self, num_phases: int, dim: int, num_classes: int, dropout: float = 0.2, dsn_lambda: float = 1.0,
                 label_smoothing: float = 0.0, **_):
        super().__init__(num_phases, dim, num_classes, dropout, label_smoothing)
        self.aux = nn.ModuleList([nn.Linear(dim, num_classes) for _ in range(num_phases)])
        self.dsn_lambda = dsn_lambda

    def forward(self, f: torch.Tensor, present: Optional[torch.Tensor] = None) -> dict:
        out = super().forward(f, present)
        out["aux_logits"] = torch.stack([head(f[:, p]) for p, head in enumerate(self.aux)], dim=1)
        return out

    def per_sample_loss(self, out: dict, y: torch.Tensor, class_weights: Optional[torch.Tensor]) -> torch.Tensor:
        aux = torch.stack([_ce(out["aux_logits"][:, p], y, class_weights, self.label_smoothing)
                           for p in range(len(self.aux))], dim=1)
        return (_ce(out["logits"], y, class_weights, self.label_smoothing)
                + self.dsn_lambda * _mean_over_present(aux, out["present"]))


class ABAFHead(ConcatHead):
    def __init__(self, num_phases: int, dim: int, num_classes: int, dropout: float = 0.2,
                 detach_beta: bool = False, label_smoothing: float = 0.0, **_):
        super().__init__(num_phases, dim, num_classes, dropout, label_smoothing)
        self.gates = nn.ModuleList([nn.Linear(num_phases * dim, dim) for _ in range(num_phases)])
        self.aux = nn.ModuleList([nn.Linear(dim, num_classes) for _ in range(num_phases)])
        self.score = nn.Linear(dim, 1, bias=False)
        nn.init.constant_(self.score.weight, 1.0 / dim)
        self.detach_beta = detach_beta

    def forward(self, f: torch.Tensor, present: Optional[torch.Tensor] = None) -> dict:
        present = _present(f, present)
        concat = f.flatten(1)                                                         # (B, P*D)
        g = torch.stack([torch.sigmoid(w(concat)) * f[:, p] for p, w in enumerate(self.gates)], dim=1)  # (B,P,D)
        beta = _masked_softmax(self.score(g).squeeze(2), present)                     # (B, P), 0 where absent
        fused = (beta.unsqueeze(2).to(g.dtype) * g).flatten(1)                         # (B, P*D)
        aux = torch.stack([head(g[:, p]) for p, head in enumerate(self.aux)], dim=1)  # (B, P, K)
        return {"logits": self.classifier(fused), "aux_logits": aux, "beta": beta, "embedding": fused,
                "present": present}

    def per_sample_loss(self, out: dict, y: torch.Tensor, class_weights: Optional[torch.Tensor]) -> torch.Tensor:
        beta = out["beta"].detach() if self.detach_beta else out["beta"]
        aux = torch.stack([_ce(out["aux_logits"][:, p], y, class_weights, self.label_smoothing)
                           for p in range(beta.shape[1])], dim=1)
        # beta of absent phases is 0
        return _ce(out["logits"], y, class_weights, self.label_smoothing) + (beta.float() * aux).sum(1)


class DecisionHead(nn.Module):
    def __init__(self, num_phases: int, dim: int, num_classes: int, dropout: float = 0.2,
                 label_smoothing: float = 0.0, **_):
        super().__init__()
        self.label_smoothing = label_smoothing
        self.aux = nn.ModuleList([nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, num_classes))
                                  for _ in range(num_phases)])
        self.phase_logits = nn.Parameter(torch.zeros(num_phases))

    def forward(self, f: torch.Tensor, present: Optional[torch.Tensor] = None) -> dict:
        present = _present(f, present)
        aux = torch.stack([head(f[:, p]) for p, head in enumerate(self.aux)], dim=1)  # (B, P, K)
        beta = _masked_softmax(self.phase_logits.unsqueeze(0).expand(f.shape[0], -1), present)  # (B, P)
        logits = (beta.unsqueeze(2) * torch.log_softmax(aux.float(), dim=2)).sum(1)   # (B, K)
        return {"logits": logits, "aux_logits": aux, "beta": beta, "embedding": f.flatten(1), "present": present}

    def per_sample_loss(self, out: dict, y: torch.Tensor, class_weights: Optional[torch.Tensor]) -> torch.Tensor:
        aux = torch.stack([_ce(out["aux_logits"][:, p], y, class_weights, self.label_smoothing)
                           for p in range(len(self.aux))], dim=1)
        return _ce(out["logits"], y, class_weights, self.label_smoothing) + _mean_over_present(aux, out["present"])

    def loss(self, out: dict, y: torch.Tensor, class_weights: Optional[torch.Tensor] = None,
             sample_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        return _weighted_mean(self.per_sample_loss(out, y, class_weights), sample_weights)


HEADS = {"concat": ConcatHead, "dsn": DSNHead, "abaf": ABAFHead, "decision": DecisionHead}


def build_head(mode: str, num_phases: int, dim: int, num_classes: int, **options) -> nn.Module:
    if mode not in HEADS:
        raise MVExtError(f"fusion '{mode}' is not known. Allowed: {', '.join(FUSION_MODES)}.")
    return HEADS[mode](num_phases, dim, num_classes, **options)
