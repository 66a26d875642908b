"""Scan backend ``"monai"``: a MONAI network with the user's state dict (frozen, or
fine-tuned on the labels with ``fine_tune``)."""

from __future__ import annotations

import numpy as np

from toolkit.encoders.backends.base import TorchBackbone
from toolkit.io.scan import quiet_monai, resize_and_scale

#: ``model_kwargs`` of a network built without them: one 3-D input channel.
DEFAULT_MONAI_KWARGS = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2}


class Monai(TorchBackbone):
    """``monai.networks.nets.<model>(**model_kwargs)`` with the state dict of ``weights``;
    volumes resized to ``spatial_size`` and scaled on the network's device."""

    name = "monai"
    feature_prefix = "scan_emb"

    def example(self, folder) -> dict:
        import torch
        from monai.networks.nets import DenseNet

        kwargs = dict(
            spatial_dims=3, in_channels=1, out_channels=2, init_features=8, growth_rate=4,
            block_config=(2, 2), bn_size=2,
        )  # fmt: skip
        torch.manual_seed(0)
        torch.save(DenseNet(**kwargs).state_dict(), f"{folder}/monai.pt")
        return {
            "model": "DenseNet", "model_kwargs": kwargs, "weights": f"{folder}/monai.pt",
            "spatial_size": (16, 16, 16), "device": "cpu",
        }  # fmt: skip

    def architectures(self) -> set[str]:
        from monai.networks import nets

        return set(getattr(nets, "__all__", ())) or {
            n for n in dir(nets) if isinstance(getattr(nets, n), type)
        }

    def network(self, encoder):
        if not encoder.model:
            raise ValueError(
                "backend='monai' needs model=<monai.networks.nets name>, e.g. 'DenseNet121'"
            )
        with quiet_monai():
            from monai.networks import nets

            if not hasattr(nets, encoder.model):
                raise ValueError(
                    f"unknown MONAI network '{encoder.model}' (see monai.networks.nets)"
                )
            kwargs = encoder.model_kwargs or dict(DEFAULT_MONAI_KWARGS)
            return getattr(nets, encoder.model)(**kwargs)

    def probe(self, encoder):
        import torch

        return torch.zeros(1, 1, *encoder.spatial_size, device=encoder.device_)

    def fit(self, encoder, decoded) -> None:
        check_spatial_size(self, encoder)
        super().fit(encoder, decoded)

    def fine_tune_network(self, encoder, n_out: int):
        check_spatial_size(self, encoder)
        return super().fine_tune_network(encoder, n_out)

    def auto_cost(self, encoder):
        return ("voxels", int(np.prod(encoder.spatial_size)))

    def finish_reads(self, encoder, items: list) -> list:
        # Same-shape volumes resized and intensity-scaled together on the network's device,
        # where the tensors stay.
        return resize_and_scale(
            items,
            spatial_size=tuple(encoder.spatial_size),
            device=getattr(encoder, "device_", None),
        )

    def stack(self, encoder, batch: list):
        import torch

        return torch.stack(batch)[:, None]


def _runs(net, shape) -> str | None:
    """None when ``net`` takes a (1, 1, *shape) input (shapes only, on the meta device),
    else the first line of its error."""
    import torch

    try:
        with torch.no_grad():
            net(torch.empty(1, 1, *shape, device="meta"))
    except (RuntimeError, ValueError, IndexError, AssertionError) as exc:
        return (str(exc).splitlines() or [type(exc).__name__])[0][:200]
    return None


def check_spatial_size(backend: Monai, encoder, largest: int = 1024) -> None:
    """Refuse a ``spatial_size`` the network cannot take (smaller than its kernels and
    downsampling allow), naming the smallest cube side it takes, before any weights are
    loaded or volumes resized: the shapes are traced on torch's meta device (no memory,
    no compute), as MONAI raises nothing clearer than a pooling error at fit."""
    import torch

    size = tuple(int(n) for n in encoder.spatial_size)
    with torch.device("meta"):
        net = backend.build_network(encoder).eval()
    error = _runs(net, size)
    if error is None:
        return
    side = 1
    while side <= largest and _runs(net, (side,) * 3) is not None:
        side *= 2
    if side > largest:
        need = f"no cube up to {largest} voxels a side works either"
    else:
        low = side // 2  # fails (or 0)
        while side - low > 1:
            mid = (low + side) // 2
            low, side = (low, mid) if _runs(net, (mid,) * 3) is None else (mid, side)
        need = f"the smallest cube it takes is ({side}, {side}, {side})"
    raise ValueError(
        f"ScanEncoder(spatial_size={size}) is too small for MONAI '{encoder.model}' with "
        f"model_kwargs={encoder.model_kwargs}: its convolutions and downsampling fail on it "
        f"({error}); {need}; pass a larger spatial_size (or a network with less "
        "downsampling)"
    )
