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
    # Settings of torchvision's builders and model classes that only shape the network
    # (numbers, flags, text); never weights, weights_backbone, pretrained or progress.
    inert_kwargs = frozenset(
        {
            "num_classes", "aux_logits", "aux_loss", "num_keypoints", "quantize",
            "trainable_backbone_layers", "transform_input", "init_weights",
            "dropout", "attention_dropout", "dropout_aux", "mlp_dropout", "drop_rate",
            "stochastic_depth_prob", "layer_scale", "zero_init_residual", "groups",
            "width_per_group", "replace_stride_with_dilation", "width_mult", "round_nearest",
            "last_channel", "growth_rate", "block_config", "bn_size", "num_init_features",
            "memory_efficient", "squeeze_ratio", "version", "expansion_ratio", "mlp_ratio",
            "image_size", "patch_size", "num_layers", "num_heads", "hidden_dim", "mlp_dim",
            "representation_size", "min_size", "max_size", "image_mean", "image_std",
            "score_thresh", "nms_thresh", "detections_per_img", "fg_iou_thresh",
            "bg_iou_thresh", "topk_candidates", "center_sampling_radius",
            "box_score_thresh", "box_nms_thresh", "box_detections_per_img",
            "box_fg_iou_thresh", "box_bg_iou_thresh", "box_batch_size_per_image",
            "box_positive_fraction", "rpn_pre_nms_top_n_train", "rpn_pre_nms_top_n_test",
            "rpn_post_nms_top_n_train", "rpn_post_nms_top_n_test", "rpn_nms_thresh",
            "rpn_fg_iou_thresh", "rpn_bg_iou_thresh", "rpn_batch_size_per_image",
            "rpn_positive_fraction", "rpn_score_thresh",
        }
    )  # fmt: skip
    # The detection and segmentation builders download an ImageNet backbone by default.
    offline_kwargs = {"weights": None, "weights_backbone": None}

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
            builder = torchvision.models.get_model_builder(encoder.model)
        except ValueError as exc:
            raise ValueError(f"unknown torchvision architecture '{encoder.model}': {exc}") from exc
        kwargs = self.constructor_kwargs(encoder, builder)
        try:
            return builder(**kwargs)
        except (TypeError, ValueError) as exc:
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
