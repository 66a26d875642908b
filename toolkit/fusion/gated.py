"""Gated fusion: a gated multimodal unit generalized to M modalities, trained with torch."""

from __future__ import annotations

from numbers import Integral

import numpy as np
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from toolkit.embeddings import Embeddings
from toolkit.fusion.neural import TRAINING_CONSTRAINTS, NeuralFusion


class GatedFusion(NeuralFusion):
    """Gated fusion of M modalities (torch), with modality dropout and early stopping.

    Each standardized block (weighted by 1/sqrt(d_m), as in early fusion) is projected
    to ``hidden_size`` units, p_m = tanh(P_m x_m). From the context c = [p_1, ..., p_M,
    availability mask] every modality gets a reset gate r_m = sigmoid(W_r,m c) and an
    update gate z_m = sigmoid(W_z,m c) (per hidden unit); its candidate is
    h~_m = tanh(U_m (r_m * p_m)), and the fused state is h = sum_m z_m * h~_m. This
    generalizes the gated multimodal unit (z = sigmoid(W_z [x, y]),
    h = (1 - z) * h~_x + z * h~_y) and its GRU-style reset gate to M modalities: the
    gates see every modality, the content of each path comes from its own modality, and
    an absent modality has zero gate (no imputation).

    Training uses AdamW, dropout, and modality dropout (each available modality of a
    training row is hidden with probability ``modality_dropout``, one always kept), so
    predictions without a modality are learned. Early stopping (best weights restored)
    monitors the validation loss on the full rows *and* on every leave-one-modality-out
    view of them, so the missing-modality paths cannot memorize noise unchecked.

    Parameters
    ----------
    hidden_size : int, default=32
    modality_dropout : float in [0, 1), default=0.2
    max_epochs : int, default=200
    batch_size : int, default=64
    learning_rate : float, default=3e-3
    weight_decay : float, default=1e-3
    dropout : float in [0, 1), default=0.3
        Dropout on the modality inputs and on the fused state during training.
    patience : int, default=15
        Epochs without validation improvement before stopping.
    validation_fraction : float, default=0.15
        Share of training rows held out for early stopping (none below 20 rows).
    device : str, default="auto"
    random_state : int, RandomState or None
        Seeds initialization, batching, dropout and the validation split: the same
        seed and data give identical predictions on CPU.

    Attributes
    ----------
    module_ : torch.nn.Module
    n_epochs_ : int
        Epochs trained (including the patience window).
    best_epoch_ : int
    history_ : list of dict
        Per-epoch training and validation loss.
    prior_ : ndarray

    Examples
    --------
    >>> import numpy as np
    >>> from toolkit import Embeddings, GatedFusion
    >>> rng = np.random.default_rng(0)
    >>> emb = Embeddings({"a": rng.normal(size=(60, 2)), "b": rng.normal(size=(60, 3))})
    >>> y = (emb.blocks["a"][:, 0] > 0).astype(int)
    >>> fusion = GatedFusion(max_epochs=20, random_state=0).fit(emb, y, n_classes=2)
    >>> fusion.gate_values(emb).shape
    (60, 2)
    """

    _parameter_constraints = {
        "hidden_size": [Interval(Integral, 1, None, closed="left")],
        **TRAINING_CONSTRAINTS,
    }

    def __init__(
        self,
        hidden_size=32,
        modality_dropout=0.2,
        max_epochs=200,
        batch_size=64,
        learning_rate=3e-3,
        weight_decay=1e-3,
        dropout=0.3,
        patience=15,
        validation_fraction=0.15,
        device="auto",
        random_state=None,
    ):
        self.hidden_size = hidden_size
        self.modality_dropout = modality_dropout
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.device = device
        self.random_state = random_state

    _network_name = "gated"

    def _module_spec(self, dims: list[int], n_out: int) -> dict:
        return {"dims": dims, "hidden": self.hidden_size, "n_out": n_out, "dropout": self.dropout}

    def _build_module(self, spec: dict):
        from toolkit.fusion._gated_module import GatedUnit

        dims, v = self._read_spec(spec, ints=("hidden", "n_out"), floats=("dropout",))
        return GatedUnit(dims, v["hidden"], v["n_out"], v["dropout"])

    def gate_values(self, emb: Embeddings) -> np.ndarray:
        """Per-sample update gate z_m of each modality, averaged over hidden units.

        Returns an array of shape (n_samples, n_modalities) in [0, 1]; absent modalities
        get exactly 0. This is a model-internal view
        of how much each modality's candidate enters the fused state; it is not an
        attribution of the output (use the Shapley explanation for that).
        """
        import torch

        check_is_fitted(self, "module_")
        xs, mask = self._tensors(emb)
        with torch.inference_mode():
            _, z = self.module_(xs, mask)
        return z.cpu().numpy().mean(axis=2)
