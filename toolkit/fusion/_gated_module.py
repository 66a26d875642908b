"""The torch module of GatedFusion (imported only when gated fusion is fitted)."""

from __future__ import annotations

import torch
from torch import nn


class GatedUnit(nn.Module):
    """Gated multimodal unit for M modalities.

    p_m = tanh(P_m dropout(x_m)) * a_m                 (projection; a = availability mask)
    c = [p_1, ..., p_M, a]                             (context)
    r_m = sigmoid(W_r,m c),  z_m = sigmoid(W_z,m c) * a_m
    h~_m = tanh(U_m (r_m * p_m)),  h = sum_m z_m * h~_m,  output = head(h)
    """

    def __init__(self, dims: list[int], hidden: int, n_out: int, dropout: float = 0.1):
        super().__init__()
        m = len(dims)
        ctx = m * hidden + m
        self.proj = nn.ModuleList([nn.Linear(d, hidden) for d in dims])
        self.reset = nn.ModuleList([nn.Linear(ctx, hidden) for _ in dims])
        self.cand = nn.ModuleList([nn.Linear(hidden, hidden) for _ in dims])
        self.gate = nn.Linear(ctx, m * hidden)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, n_out))
        self.m, self.hidden = m, hidden

    def forward(self, xs: list[torch.Tensor], mask: torch.Tensor):
        a = mask.to(xs[0].dtype)
        p = [torch.tanh(self.proj[i](self.drop(xs[i]))) * a[:, i : i + 1] for i in range(self.m)]
        c = torch.cat(p + [a], dim=1)
        cand = []
        for i in range(self.m):
            r = torch.sigmoid(self.reset[i](c))
            cand.append(torch.tanh(self.cand[i](r * p[i])))
        logits = self.gate(c).view(-1, self.m, self.hidden)
        z = torch.sigmoid(logits) * a[:, :, None]
        h = (z * torch.stack(cand, dim=1)).sum(dim=1)
        return self.head(h), z
