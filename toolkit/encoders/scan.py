"""3-D scan encoder: MONAI preprocessing + radiomics-style statistics; MONAI networks by weights
(frozen, or fine-tuned on the labels with ``fine_tune``)."""

from __future__ import annotations

from numbers import Integral
from pathlib import Path

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from toolkit._utils import resolve_device
from toolkit.encoders._cnn import TRAINING_CONSTRAINTS, TrainableMixin
from toolkit.encoders._finetune import (
    FINE_TUNE_CONSTRAINTS,
    FineTuneMixin,
    check_fine_tune,
    depth_constraint,
    load_pretrained,
    replace_head,
)
from toolkit.encoders._torch import apply_weights, penultimate
from toolkit.encoders.base import AUTO_BATCH, BaseEncoder
from toolkit.io.scan import (
    MAX_RESAMPLED_VOXELS,
    MAX_VOXELS,
    _check_preprocess,
    _quiet_monai,
    load_oriented_scan,
    resize_and_scale,
)

_DEFAULT_MONAI_KWARGS = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2}
_FIRST_ORDER = [
    "mean",
    "std",
    "skewness",
    "kurtosis",
    "p05",
    "p25",
    "p50",
    "p75",
    "p95",
    "entropy",
    "energy",
]
_SHAPE = [
    "fg_fraction", "fg_com_0", "fg_com_1", "fg_com_2", "fg_extent_0", "fg_extent_1", "fg_extent_2",
    "fg_log_components", "fg_largest_fraction", "fg_surface_ratio",
    "bright_log_components", "bright_fraction", "bright_largest_fraction",
]  # fmt: skip


def _otsu(hist: np.ndarray, centers: np.ndarray) -> float:
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centers)
    mu0 = m0 / np.maximum(w0, 1e-12)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1e-12)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centers[int(np.argmax(between[:-1]))]) if len(hist) > 1 else 0.5


def _components(mask: np.ndarray) -> tuple[float, float]:
    from scipy import ndimage

    labels, count = ndimage.label(mask)
    if count == 0:
        return 0.0, 0.0
    sizes = np.bincount(labels.ravel())[1:]
    return float(np.log1p(count)), float(sizes.max() / mask.size)


def scan_statistics(v: np.ndarray, hist_bins: int, grid: int) -> np.ndarray:
    """Intensity histogram, first-order, shape and coarse-grid features of a [0, 1] volume."""
    import torch
    from scipy import ndimage

    flat = v.ravel().astype(np.float64)
    hist, edges = np.histogram(flat, bins=hist_bins, range=(0.0, 1.0))
    hist = hist / flat.size
    centers = (edges[:-1] + edges[1:]) / 2
    mean, std = flat.mean(), flat.std()
    z = (flat - mean) / (std + 1e-8)
    nz = hist[hist > 0]
    first = [mean, std, (z**3).mean(), (z**4).mean() - 3.0, *np.percentile(flat, [5, 25, 50, 75, 95]),
             float(-(nz * np.log2(nz)).sum()), (flat**2).mean()]  # fmt: skip
    fg = v > _otsu(hist, centers)
    frac = fg.mean()
    if fg.any():
        coords = np.argwhere(fg)
        com = coords.mean(axis=0) / np.maximum(np.array(v.shape) - 1, 1)
        extent = (coords.max(axis=0) - coords.min(axis=0) + 1) / np.array(v.shape)
        eroded = ndimage.binary_erosion(fg)
        surface = float((fg & ~eroded).sum() / fg.sum())
    else:
        com, extent, surface = np.full(3, 0.5), np.zeros(3), 0.0
    fg_comp, fg_largest = _components(fg)
    bright = v > min(mean + 2 * std, 0.999)
    br_comp, br_largest = _components(bright)
    shape = [frac, *com, *extent, fg_comp, fg_largest, surface, br_comp, bright.mean(), br_largest]
    coarse = (
        torch.nn.functional.adaptive_avg_pool3d(torch.from_numpy(v)[None, None], grid)
        .reshape(-1)
        .numpy()
    )
    return np.concatenate([hist, np.asarray(first), np.asarray(shape), coarse]).astype(np.float32)


class ScanEncoder(FineTuneMixin, TrainableMixin, BaseEncoder):
    """Encode a column of 3-D scans (NIfTI/DICOM paths or 3-D arrays).

    Every scan is read with MONAI's ``LoadImage``, oriented to ``orientation`` (files
    with an affine), optionally resampled to ``pixdim`` mm, resized to ``spatial_size``
    and intensity-scaled so that the 1st/99th percentiles map to 0/1 (clipped).

    Parameters
    ----------
    backend : {"statistics", "monai"}, default="statistics"
        ``"statistics"`` (no weights): a ``hist_bins``-bin intensity histogram,
        first-order statistics (mean, std, skewness, kurtosis, percentiles, entropy,
        energy), shape statistics of the Otsu foreground and of bright regions (fraction,
        centre of mass, extent, connected components, surface ratio) and the volume
        average-pooled to ``grid``³ cells. ``"monai"``: the network ``model`` from
        ``monai.networks.nets`` (e.g. ``"DenseNet121"``) built with ``model_kwargs`` and
        loaded from ``weights``; features are the input of its last Linear layer. With
        ``fine_tune`` that network is fine-tuned on the labels (below).
    model : str, default=None
    weights : str or path, default=None
    model_kwargs : dict, default=None
        Defaults to ``{"spatial_dims": 3, "in_channels": 1, "out_channels": 2}``.
    spatial_size : tuple of 3 int, default=(64, 64, 64)
    pixdim : tuple of 3 float, default=None
        Target voxel spacing in mm before resizing (None: no resampling).
    orientation : str or None, default="RAS"
    hist_bins : int, default=32
    grid : int, default=4
    batch_size : int or "auto", default="auto"
        Volumes decoded and held at once (bounded memory: each at its size after
        orientation and resampling, before resizing); same-shape volumes among them are
        resized and intensity-scaled together, on ``device`` for the ``"monai"`` backend.
        ``"auto"``: with the monai backend on a CUDA device, as many volumes as fit a budget
        of 2**23 resized voxels (32 at 64^3; ``toolkit.encoders._batching``), the next
        batch read and resized in a background thread while the network runs the current
        one (pass an integer to hold fewer large source volumes at once); otherwise 4.
    device : str, default="auto"
    on_error : {"raise", "missing"}, default="raise"
    progress : bool, default=True
    max_voxels : int, default=2**28
        Largest stored volume accepted (``toolkit.io.scan.MAX_VOXELS``), read from the NIfTI
        or DICOM header and checked before decoding (a ``ReadError``: with
        ``on_error="missing"`` the row is marked missing). Decoding peaks at ~6 bytes per
        voxel (about 1.6 GB at the default).
    max_resampled_voxels : int, default=2**25
        Largest grid the preprocessing creates (``toolkit.io.scan.MAX_RESAMPLED_VOXELS``):
        the volume resampling to ``pixdim`` would produce, computed from the NIfTI header
        before decoding (DICOM: from the decoded volume's affine, before resampling), a
        ``ReadError`` like ``max_voxels``; ``spatial_size`` must fit it too (a
        ``ValueError`` in ``fit``). Resampling peaks at ~29 bytes per voxel (about 1 GB at
        the default).
    n_jobs : int, default=None
        Worker processes (joblib) that read and encode chunks of ``batch_size`` items in
        parallel with the weights-free default backend; None or 1 encodes in this process
        (whatever ``joblib.parallel_config`` is active, so folds run in parallel by a study
        do not start workers of their own), -1 uses every CPU. The blocks are identical to
        a serial run, bit for bit (the same chunks are encoded the same way); starting the
        workers (which import torch) costs seconds, so it pays on thousands of items.
        Pretrained backends refuse it (their network is batched on one device).
    fine_tune : bool or "top", default=False
        monai backend: ``True`` or ``"top"`` fine-tunes the network on the labels inside
        ``fit(X, y)`` (a *supervised* encoder, cross-fitted by the estimators): its last
        Linear layer is replaced by a new head (one output per class, or one for a float
        target), and the head and the top ``trainable_blocks`` blocks are trained, every
        other parameter and batch-norm statistic kept as loaded (eval mode). Training as
        :class:`~toolkit.ImageEncoder`'s (AdamW, mini-batches of ``batch_size`` volumes,
        early stopping on ``validation_fraction`` of the rows, whole groups with
        ``groups``, seeded by ``random_state``, bfloat16 autocast on a GPU). The features
        stay the head's input; ``encode_scores`` gives the head's outputs.
    trainable_blocks : int, default=2
        Blocks fine-tuned below the head, counted from the top (0: the head alone): the
        network's modules in order, plain ``Sequential`` stages opened into their blocks
        (a DenseNet's dense blocks and transitions, a ResNet's residual blocks);
        ``trainable_blocks_`` names those trained.
    max_epochs : int, default=30
    patience : int, default=5
    learning_rate : float, default=1e-3
    weight_decay : float, default=1e-4
    validation_fraction : float, default=0.15
    random_state : int, RandomState or None, default=None
    verbose : bool, default=False
        Training of ``fine_tune``, as :class:`~toolkit.ImageEncoder`'s.

    Attributes
    ----------
    n_features_out_ : int
    history_ : list of dict
        fine_tune: per epoch, ``train_loss`` and (with validation rows) ``valid_loss``.
    trainable_blocks_ : list of str
        fine_tune: the modules trained (top blocks, then the head).

    Examples
    --------
    >>> import numpy as np
    >>> from toolkit import ScanEncoder
    >>> vol = np.random.default_rng(0).random((16, 16, 16))
    >>> ScanEncoder(spatial_size=(16, 16, 16)).fit_transform([vol, None]).shape
    (2, 120)
    """

    modality = "scan"
    #: Version of the preprocessing and statistics, part of the cache key (toolkit.cache).
    #: 2: resizing and scaling batched over same-shape volumes (``resize_and_scale``).
    features_version = 2
    _parameter_constraints = {
        **BaseEncoder._parameter_constraints,
        "backend": [StrOptions({"statistics", "monai"})],
        "model": [str, None],
        "weights": [str, Path, None],
        "model_kwargs": [dict, None],
        "spatial_size": [tuple, list],
        "pixdim": [tuple, list, None],
        "orientation": [str, None],
        "hist_bins": [Interval(Integral, 2, 1024, closed="both")],
        "grid": [Interval(Integral, 1, 32, closed="both")],
        "device": [str, None],
        "max_voxels": [Interval(Integral, 1, None, closed="left")],
        "max_resampled_voxels": [Interval(Integral, 1, None, closed="left")],
        "batch_size": AUTO_BATCH,
        **{k: v for k, v in TRAINING_CONSTRAINTS.items() if k not in ("widths", "dropout", "n_networks")},
        **FINE_TUNE_CONSTRAINTS,
        "trainable_blocks": depth_constraint(),
    }
    _trainable_backends = ()
    _fine_tune_backend = "monai"
    _cpu_batch_size = 4

    def __init__(
        self,
        backend="statistics",
        model=None,
        weights=None,
        model_kwargs=None,
        spatial_size=(64, 64, 64),
        pixdim=None,
        orientation="RAS",
        hist_bins=32,
        grid=4,
        batch_size="auto",
        device="auto",
        on_error="raise",
        progress=True,
        max_voxels=MAX_VOXELS,
        max_resampled_voxels=MAX_RESAMPLED_VOXELS,
        n_jobs=None,
        fine_tune=False,
        trainable_blocks=2,
        max_epochs=30,
        patience=5,
        learning_rate=1e-3,
        weight_decay=1e-4,
        validation_fraction=0.15,
        random_state=None,
        verbose=False,
    ):
        self.backend = backend
        self.model = model
        self.weights = weights
        self.model_kwargs = model_kwargs
        self.spatial_size = spatial_size
        self.pixdim = pixdim
        self.orientation = orientation
        self.hist_bins = hist_bins
        self.grid = grid
        self.batch_size = batch_size
        self.device = device
        self.on_error = on_error
        self.progress = progress
        self.max_voxels = max_voxels
        self.max_resampled_voxels = max_resampled_voxels
        self.n_jobs = n_jobs
        self.fine_tune = fine_tune
        self.trainable_blocks = trainable_blocks
        self.max_epochs = max_epochs
        self.patience = patience
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.verbose = verbose

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        if self.backend != "statistics":
            return super().get_feature_names_out(input_features)
        names = [f"hist{i}" for i in range(self.hist_bins)] + _FIRST_ORDER + _SHAPE
        names += [f"grid{i}" for i in range(self.grid**3)]
        return np.asarray(names, dtype=object)

    def _feature_prefix(self) -> str:
        return "scan_emb"

    def _read(self, item):
        # Per volume: load, check, orient and resample (CPU); _finish_reads resizes and
        # scales the chunk's volumes together.
        return load_oriented_scan(
            item,
            max_voxels=self.max_voxels,
            max_resampled_voxels=self.max_resampled_voxels,
            spatial_size=tuple(self.spatial_size),
            pixdim=self.pixdim,
            orientation=self.orientation,
        )

    def _auto_cost(self):
        return ("voxels", int(np.prod(self.spatial_size))) if self.backend == "monai" else None

    def _finish_reads(self, volumes: list) -> list:
        # Same-shape volumes are resized and intensity-scaled together on the network's
        # device (the CPU for the statistics backend), where the tensors stay.
        on_device = self.backend == "monai"
        out = resize_and_scale(
            volumes,
            spatial_size=tuple(self.spatial_size),
            device=getattr(self, "device_", None) if on_device else None,
        )
        if on_device:
            return out
        return [v if isinstance(v, Exception) else v.numpy() for v in out]

    def build_network(self):
        """The bare MONAI network ``model(**model_kwargs)``, without weights.

        ``model_kwargs`` defaults to ``{"spatial_dims": 3, "in_channels": 1,
        "out_channels": 2}``; a fine-tuned encoder's network has its head of ``n_outputs_``
        outputs. Built from the encoder's own parameters only (nothing is
        loaded or downloaded) on the current default device, so it can be built under
        ``with torch.device("meta"):`` to compare its state-dict shapes with a weights
        file. Raises ``ValueError`` for other backends.

        Returns
        -------
        torch.nn.Module
        """
        if self.backend != "monai":
            raise ValueError(
                f"ScanEncoder(backend={self.backend!r}) has no network: build_network needs "
                "backend='monai'"
            )
        if not self.model:
            raise ValueError(
                "backend='monai' needs model=<monai.networks.nets name>, e.g. 'DenseNet121'"
            )
        with _quiet_monai():
            from monai.networks import nets

            if not hasattr(nets, self.model):
                raise ValueError(f"unknown MONAI network '{self.model}' (see monai.networks.nets)")
            kwargs = self.model_kwargs or dict(_DEFAULT_MONAI_KWARGS)
            net = getattr(nets, self.model)(**kwargs)
        if self._fine_tuning() and hasattr(self, "n_outputs_"):
            replace_head(net, self.n_outputs_)
        return net

    def check_settings(self) -> None:
        """Check the settings that need no data (sizes within ``max_resampled_voxels``), so a
        study config is refused by ``mmtk validate`` before any work; ValueError otherwise."""
        self._validate_params()
        _check_preprocess(self.spatial_size, self.pixdim, self.max_resampled_voxels)

    def _fit(self, decoded) -> None:
        check_fine_tune(self)
        _check_preprocess(self.spatial_size, self.pixdim, self.max_resampled_voxels)
        if self.backend == "statistics":
            self.n_features_out_ = self.hist_bins + len(_FIRST_ORDER) + len(_SHAPE) + self.grid**3
            return
        import torch

        net = self.build_network()
        if self.weights is None:
            raise ValueError(
                "backend='monai' needs weights=<state dict file>; nothing is downloaded"
            )
        apply_weights(net, self.weights)
        self.device_ = resolve_device(self.device)
        self.model_ = net.to(self.device_).eval()
        with torch.inference_mode():
            probe = penultimate(
                self.model_, torch.zeros(1, 1, *self.spatial_size, device=self.device_)
            )
        self.n_features_out_ = int(probe.shape[1])

    # -- fine-tuning (FineTuneMixin) ------------------------------------------------------

    def _ft_network(self, n_out: int):
        """The MONAI network with the state dict of ``weights`` and a new head."""
        _check_preprocess(self.spatial_size, self.pixdim, self.max_resampled_voxels)
        net = self.build_network()
        if self.weights is None:
            raise ValueError(
                "backend='monai' needs weights=<state dict file>; nothing is downloaded"
            )
        load_pretrained(net, self.weights, f"MONAI's '{self.model}' with model_kwargs={self.model_kwargs}")
        return replace_head(net, n_out)

    def _ft_inputs(self, volumes: list):
        """The training volumes (resized and scaled) as one (n, 1, *spatial_size) tensor."""
        import torch

        return torch.stack([v.cpu() for v in volumes])[:, None]

    def _ft_forward(self, net, x, idx):
        return net(x[idx.cpu()].to(self.device_))

    def _encode_batch(self, volumes) -> np.ndarray:
        if self.backend == "statistics":
            return np.stack([scan_statistics(v, self.hist_bins, self.grid) for v in volumes])
        import torch

        x = torch.stack(volumes)[:, None].to(self.device_)
        with torch.inference_mode():
            return penultimate(self.model_, x).float().cpu().numpy()
