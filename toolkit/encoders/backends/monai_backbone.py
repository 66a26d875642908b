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
