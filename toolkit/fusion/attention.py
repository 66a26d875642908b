"""Attention fusion: a transformer encoder over one token per modality (torch)."""

from __future__ import annotations

from numbers import Integral

import numpy as np
from sklearn.utils._param_validation import Interval

from toolkit.fusion.neural import TRAINING_CONSTRAINTS, NeuralFusion


class AttentionFusion(NeuralFusion):
    """Attention fusion of M modalities: a small transformer over modality tokens (torch).

    Each standardized block becomes one token, t_m = W_m x_m + e_m (a per-modality
    projection to ``d_model`` units plus a learned modality embedding). A transformer
    encoder (``n_layers`` pre-norm layers, ``n_heads`` heads) lets every present token
    attend to the others; absent modalities are padded out (``src_key_padding_mask``), so
    their blocks never reach the output. The fused state is a weighted sum of the present
    tokens' outputs, followed by a linear head. Pairwise and higher interactions between
    modalities are learned through attention and the feed-forward layers.

    Evidence scales keep an uninformative modality's Shapley credit small: before training,
    a linear head is fitted on each (standardized, 1/sqrt(d_m)-balanced) block alone with
    its strength C_m chosen by inner CV (as early fusion's ``block_scales_``), and
    s_m = sqrt(C_m / max C). Block m enters the network multiplied by s_m, every key of
    modality m gets the attention bias log s_m, and the fused state is
    sum_m a_m s_m out_m / sum_m s_m over all modalities (a_m: present). A distractor is then
    shrunk at the input, nearly invisible to the other tokens, and alone it pools to nearly
    nothing, so it cannot memorize the labels in a modality-dropout view where it is alone.
    Modalities informative only together (each alone at chance) get equal scales.

    Training is that of every torch fusion (:class:`~toolkit.fusion.neural.NeuralFusion`):
    AdamW, dropout, modality dropout (each available modality of a training row is hidden
    with probability ``modality_dropout``, one always kept), and early stopping on the
    validation loss over the full rows and every leave-one-modality-out view.

    Parameters
    ----------
    d_model : int, default=16
        Token width; a multiple of ``n_heads``.
    n_heads : int, default=4
    n_layers : int, default=2
    dim_feedforward : int, default=32
        Width of each layer's feed-forward block.
    modality_dropout : float in [0, 1), default=0.2
    max_epochs : int, default=300
    batch_size : int, default=64
    learning_rate : float, default=2e-3
    weight_decay : float, default=0.1
    dropout : float in [0, 1), default=0.1
        Dropout on the modality inputs, inside the encoder and on the fused state.
    patience : int, default=40
        Epochs without validation improvement before stopping (interactions are often
        learned only after a plateau, so this is longer than gated fusion's).
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
        The network's sizes (saved with the model; the weights are checked against it).
    n_epochs_ : int
        Epochs trained (including the patience window).
    best_epoch_ : int
    history_ : list of dict
        Per-epoch training and validation loss.
    block_params_ : dict of str to float
        With several modalities: the C_m inner CV chose for a linear head on each block.
    block_scales_ : dict of str to float or None
        s_m = sqrt(C_m / max C) per modality (None with one modality: no scaling).
    prior_ : ndarray

    See Also
    --------
    TensorFusion, LowRankFusion : explicit multiplicative interactions.
    GatedFusion : learned gates over modality paths.

    Examples
    --------
    >>> import numpy as np
    >>> from toolkit import AttentionFusion, Embeddings
    >>> rng = np.random.default_rng(0)
    >>> emb = Embeddings({"a": rng.normal(size=(60, 2)), "b": rng.normal(size=(60, 3))})
    >>> y = (emb.blocks["a"][:, 0] > 0).astype(int)
    >>> fusion = AttentionFusion(max_epochs=5, random_state=0).fit(emb, y, n_classes=2)
    >>> fusion.predict_output(emb).shape
    (60, 2)
    """

    _parameter_constraints = {
        "d_model": [Interval(Integral, 1, None, closed="left")],
        "n_heads": [Interval(Integral, 1, None, closed="left")],
        "n_layers": [Interval(Integral, 1, None, closed="left")],
        "dim_feedforward": [Interval(Integral, 1, None, closed="left")],
        **TRAINING_CONSTRAINTS,
    }

    _network_name = "attention"
    _balance_blocks = True
    # each block also scaled by its own evidence, which also biases attention and pooling
    # (without it a distractor modality got 35-46% of the Shapley credit on face-only clips)
    _evidence_scales = True

    def __init__(
        self,
        d_model=16,
        n_heads=4,
        n_layers=2,
        dim_feedforward=32,
        modality_dropout=0.2,
        max_epochs=300,
        batch_size=64,
        learning_rate=2e-3,
        weight_decay=0.1,
        dropout=0.1,
        patience=40,
        validation_fraction=0.15,
        device="auto",
        random_state=None,
    ):
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_layers = n_layers
        self.dim_feedforward = dim_feedforward
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
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads}); "
                f"e.g. d_model={self.n_heads * max(1, round(self.d_model / self.n_heads))}"
            )
        return {
            "dims": dims,
            "d_model": self.d_model,
            "n_heads": self.n_heads,
            "n_layers": self.n_layers,
            "dim_feedforward": self.dim_feedforward,
            "n_out": n_out,
            "dropout": self.dropout,
            "log_scales": self._log_scales(len(dims)),
        }

    def _log_scales(self, n_modalities: int) -> list[float]:
        scales = getattr(self, "block_scales_", None)
        if not scales:
            return [0.0] * n_modalities
        return [float(np.log(s)) for s in scales.values()]

    def _build_module(self, spec: dict):
        from toolkit.fusion._modules import AttentionNetwork

        ints = ("d_model", "n_heads", "n_layers", "dim_feedforward", "n_out")
        dims, v = self._read_spec(spec, ints=ints, floats=("dropout",))
        if v["d_model"] % v["n_heads"]:
            raise ValueError(
                "the attention network's description is malformed (d_model is not a "
                "multiple of n_heads)"
            )
        log_scales = spec.get("log_scales")
        if log_scales is None:  # a network saved before the evidence scales
            return AttentionNetwork(dims, *(v[k] for k in ints[:4]), v["n_out"], v["dropout"])
        try:
            log_scales = [float(x) for x in log_scales]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"the attention network's description is malformed ({exc})") from exc
        if len(log_scales) != len(dims) or not all(np.isfinite(x) and x <= 0 for x in log_scales):
            raise ValueError(
                "the attention network's description is malformed (log_scales must hold one "
                "finite value <= 0 per modality)"
            )
        return AttentionNetwork(
            dims, *(v[k] for k in ints[:4]), v["n_out"], v["dropout"], log_scales
        )
