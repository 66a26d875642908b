"""Backend ``"cnn"`` (images, audio): a small CNN trained from scratch on the labels inside
``fit(X, y)`` (the training itself is :class:`~toolkit.encoders._cnn.TrainableMixin`'s; the
encoder turns its items into the network's input tensor)."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from toolkit.encoders._cnn import build_cnn
from toolkit.encoders._torch import save_state_dict
from toolkit.encoders.backends.base import Backend
from toolkit.io.audio import MAX_SECONDS

_TRAINING = (
    "widths", "max_epochs", "patience", "learning_rate", "weight_decay", "dropout",
    "validation_fraction", "n_networks", "random_state", "verbose",
)  # fmt: skip


class CNN(Backend):
    """A :class:`~toolkit.encoders._cnn_modules.SmallCNN` (or an ensemble of ``n_networks``)
    trained on the labels; features are the pooled vector feeding its head."""

    name = "cnn"
    parameters = _TRAINING
    fixed = False
    trains = True
    weight_parameters = ("weights",)

    def example(self, folder) -> dict:
        return {"widths": (4, 8), "max_epochs": 2, "random_state": 0, "device": "cpu"}

    def fit(self, encoder, decoded) -> None:
        raise ValueError(f"{type(encoder).__name__}(backend='cnn') is fitted by fit(X, y)")

    def encode(self, encoder, batch: list) -> np.ndarray:
        return encoder._cnn_embed(batch)

    def build_network(self, encoder):
        """The untrained network ``network_spec_`` (set by ``fit``) describes."""
        check_is_fitted(encoder, "network_spec_")
        return build_cnn(encoder.network_spec_)

    def save_weights(self, encoder, folder) -> dict[str, str]:
        from pathlib import Path

        save_state_dict(encoder.model_, Path(folder) / "weights.safetensors")
        return {"weights": "weights.safetensors"}


class ImageCNN(CNN):
    """Images resized to ``input_size`` (grey unless a training image has colour), shifted
    by up to ``augment_shift`` pixels while training."""

    parameters = (*_TRAINING, "input_size", "augment_shift")
    constraints = {
        "input_size": [Interval(Integral, 8, None, closed="left"), None],
        "augment_shift": [Interval(Integral, 0, 16, closed="both")],
    }
    feature_prefix = "image_emb"


class AudioCNN(CNN):
    """Log-mel spectrograms of ``n_mels`` bands over ``duration`` seconds at ``sample_rate``."""

    parameters = (*_TRAINING, "sample_rate", "n_mels", "duration")
    constraints = {
        "n_mels": [Interval(Integral, 4, 256, closed="both")],
        "duration": [Interval(Real, 0.05, MAX_SECONDS, closed="both"), None],
    }
    feature_prefix = "audio_emb"
