"""Late-fusion classification heads over per-phase embeddings ``f_p`` (B, D), p = 1..P, K classes.

- :class:`ConcatHead`: ``logits = MLP([f_1; ...; f_P])``; loss ``CE(logits, y)``.
- :class:`DSNHead` (deep supervision per phase): concat head plus ``aux_p = W_p f_p``;
  loss ``CE(logits, y) + lambda * mean_p CE(aux_p, y)``.
- :class:`ABAFHead` (attention-based adaptive fusion, after Li et al., "Adaptive Multimodal Fusion With Attention
  Guided Deep Supervision Net for Grading Hepatocellular Carcinoma", IEEE JBHI 2022)::

      alpha_p = sigmoid(W_p [f_1; ...; f_P])      (B, D)   per-sample gates
      g_p     = alpha_p * f_p                       (B, D)
      s_p     = mean_D(g_p)                         (B, P)   per-sample scores (never summed over the batch)
      beta    = softmax_p(s)                        (B, P)   per-sample phase weights, sum_p beta = 1
      logits  = MLP([beta_1 g_1; ...; beta_P g_P])  (B, K)   the prediction uses the attention
      aux_p   = V_p g_p                             (B, K)
      loss    = mean_b [ CE(logits_b, y_b) + sum_p beta_bp * CE(aux_pb, y_b) ]

  Logits go to ``cross_entropy`` unnormalised (the seed applied softmax first, i.e. softmax twice). ``detach_beta``
  (default True) stops the auxiliary term from training the attention: without it the cheapest way to lower
  ``sum_p beta_p CE(aux_p)`` is to move beta towards whichever auxiliary classifier is already best, so the weights
  would follow the auxiliary losses instead of what helps the fused prediction, which still trains beta through
  ``CE(logits)``. Measured (benchmarks/abaf_beta_detach.py, RESULTS.md): held-out AUC 0.749 detached vs 0.704 not,
mean of 3 seeds on the CPU; the difference is within the seed spread.

Every head returns a dict: ``logits`` (B, K), ``aux_logits`` (B, P, K) or None, ``beta`` (B, P) or None and
``embedding`` (B, P*D), the fused feature (for t-SNE).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from nnunet_mvext.errors import MVExtError

FUSION_MODES = ("concat", "dsn", "abaf")


def _mlp(in_features: int, hidden: int, num_classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, hidden), nn.LeakyReLU(inplace=True), nn.Dropout(dropout),
                         nn.Linear(hidden, num_classes))


def _ce(logits: torch.Tensor, y: torch.Tensor, class_weights: Optional[torch.Tensor]) -> torch.Tensor:
    """Per-sample cross-entropy (B,) with optional class weights."""
    return F.cross_entropy(logits.float(), y, weight=class_weights, reduction="none")


class ConcatHead(nn.Module):
    def __init__(self, num_phases: int, dim: int, num_classes: int, dropout: float = 0.2, **_):
        super().__init__()
        self.classifier = _mlp(num_phases * dim, dim, num_classes, dropout)

    def forward(self, f: torch.Tensor) -> dict:
        """``f`` (B, P, D)."""
        fused = f.flatten(1)
        return {"logits": self.classifier(fused), "aux_logits": None, "beta": None, "embedding": fused}

    def loss(self, out: dict, y: torch.Tensor, class_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        return _ce(out["logits"], y, class_weights).mean()


class DSNHead(ConcatHead):
    def __init__(self, num_phases: int, dim: int, num_classes: int, dropout: float = 0.2, dsn_lambda: float = 0.5,
                 **_):
        super().__init__(num_phases, dim, num_classes, dropout)
        self.aux = nn.ModuleList([nn.Linear(dim, num_classes) for _ in range(num_phases)])
        self.dsn_lambda = dsn_lambda

    def forward(self, f: torch.Tensor) -> dict:
        out = super().forward(f)
        out["aux_logits"] = torch.stack([head(f[:, p]) for p, head in enumerate(self.aux)], dim=1)
        return out

    def loss(self, out: dict, y: torch.Tensor, class_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        aux = torch.stack([_ce(out["aux_logits"][:, p], y, class_weights) for p in range(len(self.aux))], dim=1)
        return (_ce(out["logits"], y, class_weights) + self.dsn_lambda * aux.mean(1)).mean()


class ABAFHead(nn.Module):
    def __init__(self, num_phases: int, dim: int, num_classes: int, dropout: float = 0.2,
                 detach_beta: bool = True, **_):
        super().__init__()
        self.gates = nn.ModuleList([nn.Linear(num_phases * dim, dim) for _ in range(num_phases)])
        self.aux = nn.ModuleList([nn.Linear(dim, num_classes) for _ in range(num_phases)])
        self.classifier = _mlp(num_phases * dim, dim, num_classes, dropout)
        self.detach_beta = detach_beta

    def forward(self, f: torch.Tensor) -> dict:
        concat = f.flatten(1)                                                         # (B, P*D)
        g = torch.stack([torch.sigmoid(w(concat)) * f[:, p] for p, w in enumerate(self.gates)], dim=1)  # (B,P,D)
        beta = torch.softmax(g.mean(dim=2), dim=1)                                     # (B, P)
        fused = (beta.unsqueeze(2) * g).flatten(1)                                     # (B, P*D)
        aux = torch.stack([head(g[:, p]) for p, head in enumerate(self.aux)], dim=1)  # (B, P, K)
        return {"logits": self.classifier(fused), "aux_logits": aux, "beta": beta, "embedding": fused}

    def loss(self, out: dict, y: torch.Tensor, class_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        beta = out["beta"].detach() if self.detach_beta else out["beta"]
        aux = torch.stack([_ce(out["aux_logits"][:, p], y, class_weights) for p in range(beta.shape[1])], dim=1)
        return (_ce(out["logits"], y, class_weights) + (beta.float() * aux).sum(1)).mean()


def build_head(mode: str, num_phases: int, dim: int, num_classes: int, **options) -> nn.Module:
    heads = {"concat": ConcatHead, "dsn": DSNHead, "abaf": ABAFHead}
    if mode not in heads:
        raise MVExtError(f"fusion '{mode}' is not known. Allowed: {', '.join(FUSION_MODES)}.")
    return heads[mode](num_phases, dim, num_classes, **options)
