"""Low-rank multimodal fusion (LMF, Liu et al. 2018): tensor fusion through rank-r factors."""

from __future__ import annotations

from numbers import Integral

from sklearn.utils._param_validation import Interval

from toolkit.fusion.neural import TRAINING_CONSTRAINTS, NeuralFusion


class LowRankFusion(NeuralFusion):
    """Low-rank multimodal fusion of M modalities (torch).

    Each standardized block is projected to ``hidden_size`` units, h_m = tanh(P_m x_m).
    Every modality has ``rank`` factors W_m,r mapping [1; h_m] to ``fusion_size`` units; the
    fused vector is sum_r w_r prod_m ([1; h_m] W_m,r) + b (Liu et al., "Efficient Low-rank
    Multimodal Fusion with Modality-Specific Factors", ACL 2018): the tensor-fusion product
    [1; h_1] x ... x [1; h_M] projected by a rank-``rank`` weight tensor, computed without
    forming the product, so its cost grows linearly with M. A ReLU and a linear layer give
    the output. An absent modality contributes [1; 0] (its block's values never matter).

    Training is that of every torch fusion (:class:`~toolkit.fusion.neural.NeuralFusion`):
    AdamW, dropout, modality dropout, and early stopping on the validation loss over the
    full rows and every leave-one-modality-out view.

    Parameters
    ----------
    hidden_size : int, default=4
        Units per modality before the factors.
    rank : int, default=8
    fusion_size : int, default=32
        Width of the fused vector.
    modality_dropout : float in [0, 1), default=0.2
    max_epochs : int, default=300
    batch_size : int, default=64
    learning_rate : float, default=3e-3
    weight_decay : float, default=0.5
    dropout : float in [0, 1), default=0.1
        Dropout on the modality inputs and on the fused vector.
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
    TensorFusion : the full product (small M).
    AttentionFusion : a transformer over modality tokens.

    Examples
    --------
    >>> import numpy as np
    >>> from toolkit import Embeddings, LowRankFusion
    >>> rng = np.random.default_rng(0)
    >>> emb = Embeddings({"a": rng.normal(size=(60, 2)), "b": rng.normal(size=(60, 3))})
    >>> y = (emb.blocks["a"][:, 0] > 0).astype(int)
    >>> fusion = LowRankFusion(max_epochs=5, random_state=0).fit(emb, y, n_classes=2)
    >>> fusion.predict_output(emb).shape
    (60, 2)
    """

    _parameter_constraints = {
        "hidden_size": [Interval(Integral, 1, None, closed="left")],
        "rank": [Interval(Integral, 1, None, closed="left")],
        "fusion_size": [Interval(Integral, 1, None, closed="left")],
        **TRAINING_CONSTRAINTS,
    }

    _network_name = "low-rank fusion"
    _balance_blocks = False

    def __init__(
        self,
        hidden_size=4,
        rank=8,
        fusion_size=32,
        modality_dropout=0.2,
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
        self.rank = rank
        self.fusion_size = fusion_size
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
        return {
            "dims": dims,
            "hidden": self.hidden_size,
            "rank": self.rank,
            "fusion_size": self.fusion_size,
            "n_out": n_out,
            "dropout": self.dropout,
        }

    def _build_module(self, spec: dict):
        from toolkit.fusion._modules import LowRankNetwork

        ints = ("hidden", "rank", "fusion_size", "n_out")
        dims, v = self._read_spec(spec, ints=ints, floats=("dropout",))
        return LowRankNetwork(dims, *(v[k] for k in ints), v["dropout"])
