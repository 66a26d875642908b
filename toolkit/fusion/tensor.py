"""Tensor fusion (TFN, Zadeh et al. 2017): the outer product of the modality vectors (torch)."""

from __future__ import annotations

from numbers import Integral

from sklearn.utils._param_validation import Interval

from toolkit.fusion.neural import TRAINING_CONSTRAINTS, NeuralFusion


class TensorFusion(NeuralFusion):
    """Tensor fusion of M modalities: an MLP over the outer product of [1; h_m] (torch).

    Each standardized block is projected to ``hidden_size`` units, h_m = tanh(W_m x_m).
    The fused vector is the flattened outer product [1; h_1] x [1; h_2] x ... x [1; h_M]
    (Zadeh et al., "Tensor Fusion Network for Multimodal Sentiment Analysis", EMNLP 2017):
    it holds every unimodal term, every product of two modalities, and so on, so an MLP
    head (``head_size`` ReLU units) reads interactions between modalities directly. An
    absent modality contributes [1; 0]: only the terms of the present modalities remain,
    and its block's values never matter (nothing is imputed).

    The product has (hidden_size + 1) ** M entries; ``fit`` refuses more than
    ``max_product_size`` (the design covers M up to about 4): use a smaller
    ``hidden_size`` or :class:`LowRankFusion`, which never forms the product.

    Training is that of every torch fusion (:class:`~toolkit.fusion.neural.NeuralFusion`):
    AdamW, dropout, modality dropout, and early stopping on the validation loss over the
    full rows and every leave-one-modality-out view.

    Parameters
    ----------
    hidden_size : int, default=4
        Units per modality before the product.
    head_size : int, default=16
    max_product_size : int, default=10000
        Largest accepted (hidden_size + 1) ** n_modalities.
    modality_dropout : float in [0, 1), default=0.4
        Each available modality of a training row is hidden with this probability (one
        always kept). Higher than the other fusions': every product term of a modality
        must then also predict without it, so a distractor's terms cannot sharpen the
        informative modality's output (at 0.2 a distractor got 21% of the Shapley credit
        on a one-informative-modality task; at 0.4, 11-17% over five seeds, while the XOR
        task is still learned, 0.897 vs 0.916 of a 0.95 Bayes accuracy).
    max_epochs : int, default=300
    batch_size : int, default=64
    learning_rate : float, default=3e-3
    weight_decay : float, default=0.5
    dropout : float in [0, 1), default=0.1
        Dropout on the modality inputs, on the product and in the head.
    patience : int, default=40
        Epochs without validation improvement before stopping.
    validation_fraction : float, default=0.15
        Share of training rows held out for early stopping (none below 20 rows); with
        ``groups`` in ``fit``, whole groups.
    device : str, default="auto"
    random_state : int, RandomState or None
        Seeds initialization, batching, dropout and the validation split: the same
        seed and data give identical predictions on CPU.

    Attributes
    ----------
    module_ : torch.nn.Module
    module_spec_ : dict
    n_epochs_ : int
    best_epoch_ : int
    history_ : list of dict
    prior_ : ndarray

    See Also
    --------
    LowRankFusion : the same product through rank-r factors.
    AttentionFusion : a transformer over modality tokens.

    Examples
    --------
    >>> import numpy as np
    >>> from toolkit import Embeddings, TensorFusion
    >>> rng = np.random.default_rng(0)
    >>> emb = Embeddings({"a": rng.normal(size=(60, 2)), "b": rng.normal(size=(60, 3))})
    >>> y = (emb.blocks["a"][:, 0] > 0).astype(int)
    >>> fusion = TensorFusion(max_epochs=5, random_state=0).fit(emb, y, n_classes=2)
    >>> fusion.predict_output(emb).shape
    (60, 2)
    """

    _parameter_constraints = {
        "hidden_size": [Interval(Integral, 1, None, closed="left")],
        "head_size": [Interval(Integral, 1, None, closed="left")],
        "max_product_size": [Interval(Integral, 1, None, closed="left")],
        **TRAINING_CONSTRAINTS,
    }

    _network_name = "tensor fusion"
    # each block weighted by 1/sqrt(d_m): without it a wide noisy block (64 columns of a
    # three-view task) outweighed narrow informative ones and the fusion fell below its best
    # single modality (0.758 vs 0.793); the XOR task is learned either way (0.914 vs 0.919)
    _balance_blocks = True

    def __init__(
        self,
        hidden_size=4,
        head_size=16,
        max_product_size=10_000,
        modality_dropout=0.4,
        max_epochs=300,
        batch_size=64,
        learning_rate=3e-3,
        weight_decay=0.5,
        dropout=0.1,
        patience=40,
        validation_fraction=0.15,
        device="auto",
        random_state=None,
    ):
        self.hidden_size = hidden_size
        self.head_size = head_size
        self.max_product_size = max_product_size
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

    def _module_spec(self, dims: list[int], n_out: int) -> dict:
        size = (self.hidden_size + 1) ** len(dims)
        if size > self.max_product_size:
            raise ValueError(
                f"tensor fusion of {len(dims)} modalities with hidden_size={self.hidden_size} "
                f"forms a product of ({self.hidden_size} + 1) ** {len(dims)} = {size:,} "
                f"features, above max_product_size={self.max_product_size:,}; lower "
                "hidden_size, raise max_product_size, or use LowRankFusion (fusion='lowrank'), "
                "which never forms the product"
            )
        return {
            "dims": dims,
            "hidden": self.hidden_size,
            "head_size": self.head_size,
            "n_out": n_out,
            "dropout": self.dropout,
        }

    def _build_module(self, spec: dict):
        from toolkit.fusion._modules import TensorNetwork

        dims, v = self._read_spec(spec, ints=("hidden", "head_size", "n_out"), floats=("dropout",))
        size = (v["hidden"] + 1) ** len(dims)
        if size > self.max_product_size:
            raise ValueError(
                f"the tensor fusion network's description is malformed (a product of {size:,} "
                f"features, above max_product_size={self.max_product_size:,})"
            )
        return TensorNetwork(dims, v["hidden"], v["head_size"], v["n_out"], v["dropout"])
