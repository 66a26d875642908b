"""Image backend ``"torchvision"``: a torchvision architecture with the user's state dict
(frozen, or fine-tuned on the labels with ``fine_tune``)."""

from __future__ import annotations

from numbers import Integral

from sklearn.utils._param_validation import Interval

from toolkit.encoders.backends.base import TorchBackbone

_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet statistics


def imagenet_inputs(images: list, side: int) -> list:
    """(H, W, C) images (arrays or tensors) as (3, side, side) tensors: resized with
    antialiasing, grey repeated to RGB, standardized with ImageNet's statistics."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    mean = torch.tensor(_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(_STD).view(1, 3, 1, 1)
    out = []
    for img in images:
        t = torch.from_numpy(np.ascontiguousarray(img[..., :3])).permute(2, 0, 1)[None]
        if t.shape[1] == 1:
            t = t.expand(1, 3, *t.shape[2:])
        t = F.interpolate(
            t, size=(side, side), mode="bilinear", antialias=True, align_corners=False
        )
        out.append(((t - mean) / std)[0])
    return out


class Torchvision(TorchBackbone):
    """``torchvision.models.get_model(model, weights=None, **model_kwargs)`` with the state
    dict of ``weights``; images resized to ``input_size`` (224) and standardized."""

    name = "torchvision"
    parameters = (*TorchBackbone.parameters, "input_size")
    constraints = {"input_size": [Interval(Integral, 8, None, closed="left"), None]}
    feature_prefix = "image_emb"

    def example(self, folder) -> dict:
        import torch
        import torchvision

        torch.manual_seed(0)
        net = torchvision.models.get_model("mobilenet_v3_small", weights=None)
        torch.save(net.state_dict(), f"{folder}/torchvision.pt")
        return {
            "model": "mobilenet_v3_small", "weights": f"{folder}/torchvision.pt",
            "input_size": 32, "device": "cpu",
        }  # fmt: skip

    def architectures(self) -> set[str]:
        import torchvision

        return set(torchvision.models.list_models())

    def network(self, encoder):
        import torchvision

        if encoder.model is None:
            raise ValueError(
                "backend='torchvision' needs model=<architecture name>, e.g. 'resnet18'"
            )
        try:
            return torchvision.models.get_model(
                encoder.model, weights=None, **(encoder.model_kwargs or {})
            )
        except ValueError as exc:
            raise ValueError(f"unknown torchvision architecture '{encoder.model}': {exc}") from exc
        except TypeError as exc:
            raise ValueError(
                f"model_kwargs {encoder.model_kwargs!r} do not fit torchvision's "
                f"'{encoder.model}': {exc}"
            ) from exc

    def side(self, encoder) -> int:
        return 224 if encoder.input_size is None else int(encoder.input_size)

    def probe(self, encoder):
        import torch

        side = self.side(encoder)
        return torch.zeros(1, 3, side, side, device=encoder.device_)

    def auto_cost(self, encoder):
        return ("pixels", self.side(encoder) ** 2)

    def finish_reads(self, encoder, items: list) -> list:
        # Each image resized and normalized in the reading step (on a GPU a background
        # thread, overlapped with the previous batch's network).
        return imagenet_inputs(items, self.side(encoder))
