"""The torch module of GatedFusion (imported only when gated fusion is fitted)."""

from __future__ import annotations

import torch
from torch import nn


class GatedUnit(nn.Module):
    """Gated multimodal unit for M modalities.

    p_m = tanh(P_m x_m) * a_m                          (projection; a = availability mask)
    c = [p_1, ..., p_M, a]                             (context)
    r_m = sigmoid(W_r,m c),  h~_m = tanh(U_m [r_m * p_m, c])
    z = softmax over the available modalities of (W_z c), per hidden unit
    h = sum_m z_m * h~_m,  output = head(h)

    With two modalities this is the gated multimodal unit's convex combination
    h = (1 - z) * h~_x + z * h~_y, with GRU-style reset gates.
    """

    def __init__(self, dims: list[int], hidden: int, n_out: int):
        super().__init__()
        m = len(dims)
        ctx = m * hidden + m
        self.proj = nn.ModuleList([nn.Linear(d, hidden) for d in dims])
        self.reset = nn.ModuleList([nn.Linear(ctx, hidden) for _ in dims])
        self.cand = nn.ModuleList([nn.Linear(hidden + ctx, hidden) for _ in dims])
        self.gate = nn.Linear(ctx, m * hidden)
        self.head = nn.Sequential(nn.Dropout(0.1), nn.Linear(hidden, n_out))
        self.m, self.hidden = m, hidden

    def forward(self, xs: list[torch.Tensor], mask: torch.Tensor):
        a = mask.to(xs[0].dtype)
        p = [torch.tanh(self.proj[i](xs[i])) * a[:, i : i + 1] for i in range(self.m)]
        c = torch.cat(p + [a], dim=1)
        cand = []
        for i in range(self.m):
            r = torch.sigmoid(self.reset[i](c))
            cand.append(torch.tanh(self.cand[i](torch.cat([r * p[i], c], dim=1))))
        logits = self.gate(c).view(-1, self.m, self.hidden)
        logits = logits.masked_fill(~mask[:, :, None], -1e9)
        z = torch.softmax(logits, dim=1) * a[:, :, None]
        h = (z * torch.stack(cand, dim=1)).sum(dim=1)
        return self.head(h), z
