"""Torch modules of the attention, tensor and low-rank fusions (imported only when one of
them is fitted or loaded).

Every module takes the list of standardized blocks (one (n, d_m) tensor per modality, in the
fusion's modality order) and the availability mask (n, M), and returns logits (n, n_out).
An absent modality never reaches the output through its block: attention pads its token,
the tensor and low-rank fusions give it the vector [1; 0].
"""

from __future__ import annotations

import torch
from torch import nn


class _Projection(nn.Module):
    """Per-modality encoder x_m -> tanh(W_m dropout(x_m)), zeroed where the modality is absent."""

    def __init__(self, dims: list[int], size: int, dropout: float):
        super().__init__()
        self.proj = nn.ModuleList([nn.Linear(d, size) for d in dims])
        self.drop = nn.Dropout(dropout)

    def forward(self, xs: list[torch.Tensor], a: torch.Tensor) -> list[torch.Tensor]:
        pairs = enumerate(zip(self.proj, xs, strict=True))
        return [torch.tanh(p(self.drop(x))) * a[:, i : i + 1] for i, (p, x) in pairs]


def _with_one(h: torch.Tensor) -> torch.Tensor:
    """[1; h] per row: the constant keeps every lower-order (unimodal, bimodal...) term."""
    return torch.cat([torch.ones_like(h[:, :1]), h], dim=1)


class _ReLU(nn.Module):
    """ReLU as a plain module: a transformer layer whose activation is not ``nn.ReLU`` or
    ``F.relu`` never takes PyTorch's inference fast path, which returns NaN for the
    float attention mask used here."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


class AttentionNetwork(nn.Module):
    """One token per modality, a transformer encoder over the present tokens, weighted mean.

    t_m = W_m dropout(x_m) + e_m (e_m a learned modality embedding); the encoder attends
    over present tokens only (the key-padding mask), with a fixed bias log s_m added to the
    attention logits of every key of modality m; the fused state is
    sum_m a_m s_m out_m / sum_m s_m (a_m = 1 where modality m is present; the denominator
    runs over *all* modalities), then head = dropout -> linear. ``log_scales`` (one per
    modality) come from the fitted block evidence (see ``AttentionFusion``): a modality
    with no evidence of its own is then nearly invisible to the others and to the pooling,
    and alone it pools to nearly the zero vector, so neither its presence nor its values
    move the output much. With ``log_scales=None`` (networks saved before them) there is
    no bias and the fused state is the plain mean of the present tokens' outputs. A row
    with no modality pools to the zero vector, so its output is one constant.
    """

    def __init__(
        self,
        dims: list[int],
        d_model: int,
        n_heads: int,
        n_layers: int,
        dim_feedforward: int,
        n_out: int,
        dropout: float,
        log_scales: list[float] | None = None,
    ):
        super().__init__()
        self.proj = nn.ModuleList([nn.Linear(d, d_model) for d in dims])
        self.modality_embedding = nn.Parameter(torch.randn(len(dims), d_model) * 0.02)
        self.drop = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            d_model,
            n_heads,
            dim_feedforward=dim_feedforward,
            dropout=dropout,
            activation=_ReLU(),
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(
            layer, n_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(d_model, n_out))
        self.present_mean = log_scales is None
        scales = [0.0] * len(dims) if log_scales is None else [float(v) for v in log_scales]
        # fixed (fitted) numbers, described in module_spec_, not weights
        self.register_buffer("log_scales", torch.tensor(scales), persistent=False)

    def forward(self, xs: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        tokens = torch.stack([p(self.drop(x)) for p, x in zip(self.proj, xs, strict=True)], dim=1)
        tokens = tokens + self.modality_embedding
        present = mask.bool()
        none = ~present.any(dim=1, keepdim=True)
        # a row without any modality attends over all (zeroed) tokens so that attention is
        # defined (no NaN); its pooling weights are all zero, so its output is the constant
        # head(0) whatever its blocks hold
        attend = present | none
        log_s = self.log_scales.to(tokens.dtype)
        pad = torch.zeros(attend.shape, dtype=tokens.dtype, device=tokens.device)
        pad = pad.masked_fill(~attend, float("-inf"))
        key_bias = log_s[None, :].expand(len(log_s), -1)
        tokens = torch.where(present[:, :, None], tokens, torch.zeros_like(tokens))
        out = self.encoder(tokens, mask=key_bias, src_key_padding_mask=pad)
        out = torch.where(present[:, :, None], out, torch.zeros_like(out))
        weights = present.to(out.dtype) * log_s.exp()[None, :]
        if self.present_mean:  # a network saved before the scales: mean of present tokens
            total = weights.sum(dim=1, keepdim=True).clamp(min=1.0)
        else:
            total = log_s.exp().sum()
        pooled = (out * weights[:, :, None]).sum(dim=1) / total
        return self.head(pooled)


class TensorNetwork(nn.Module):
    """Tensor fusion network (Zadeh et al., 2017): z = flatten(outer_m [1; h_m]) -> MLP.

    h_m = tanh(W_m dropout(x_m)) * a_m, so an absent modality contributes [1; 0] and the
    product keeps exactly the terms of the present modalities.
    """

    def __init__(self, dims: list[int], hidden: int, head_size: int, n_out: int, dropout: float):
        super().__init__()
        self.encode = _Projection(dims, hidden, dropout)
        size = (hidden + 1) ** len(dims)
        self.head = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(size, head_size),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(head_size, n_out),
        )

    def forward(self, xs: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        hs = self.encode(xs, mask.to(xs[0].dtype))
        z = _with_one(hs[0])
        for h in hs[1:]:
            z = (z[:, :, None] * _with_one(h)[:, None, :]).flatten(1)
        return self.head(z)


class LowRankNetwork(nn.Module):
    """Low-rank multimodal fusion (Liu et al., 2018) followed by a small head.

    f_m = [1; h_m] W_m (rank-r factors, W_m of shape (r, hidden + 1, fusion_size)); the
    fused vector is sum_r w_r prod_m f_m,r + b, i.e. the tensor-fusion product projected by a
    rank-r weight tensor without forming it; head = ReLU -> dropout -> linear. h_m =
    tanh(P_m dropout(x_m)) * a_m, so an absent modality contributes [1; 0].
    """

    def __init__(
        self, dims: list[int], hidden: int, rank: int, fusion_size: int, n_out: int, dropout: float
    ):
        super().__init__()
        self.encode = _Projection(dims, hidden, dropout)
        self.factors = nn.ParameterList(
            [nn.Parameter(torch.empty(rank, hidden + 1, fusion_size)) for _ in dims]
        )
        self.rank_weights = nn.Parameter(torch.empty(1, rank))
        self.bias = nn.Parameter(torch.zeros(1, fusion_size))
        for f in self.factors:
            nn.init.xavier_normal_(f)
        nn.init.xavier_normal_(self.rank_weights)
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(fusion_size, n_out))

    def forward(self, xs: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        hs = self.encode(xs, mask.to(xs[0].dtype))
        fused = None
        for h, factor in zip(hs, self.factors, strict=True):
            f = torch.einsum("bi,rio->bro", _with_one(h), factor)
            fused = f if fused is None else fused * f
        fused = torch.einsum("xr,bro->bo", self.rank_weights, fused) + self.bias
        return self.head(fused)
