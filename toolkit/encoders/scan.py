"""3-D scan encoder: MONAI preprocessing + radiomics-style statistics; MONAI networks by weights
(frozen, or fine-tuned on the labels with ``fine_tune``)."""

from __future__ import annotations

from numbers import Integral
from pathlib import Path

import numpy as np
from sklearn.utils._param_validation import Interval

from toolkit.encoders._cnn import TRAINING_CONSTRAINTS, TrainableMixin
from toolkit.encoders._finetune import (
    FINE_TUNE_CONSTRAINTS,
    FineTuneMixin,
    check_fine_tune,
    depth_constraint,
)
from toolkit.encoders.backends import SCAN_BACKENDS
from toolkit.encoders.backends.scan_statistics import scan_statistics
from toolkit.encoders.base import AUTO_BATCH, BaseEncoder
from toolkit.io.scan import (
    MAX_RESAMPLED_VOXELS,
    MAX_VOXELS,
    check_intensity_range,
    check_preprocess,
    load_oriented_scan,
    read_scan,
)

__all__ = ["ScanEncoder", "scan_statistics"]


class ScanEncoder(FineTuneMixin, TrainableMixin, BaseEncoder):
    """Encode a column of 3-D scans (NIfTI/DICOM paths or 3-D arrays).

    Every scan is read with MONAI's ``LoadImage``, oriented to ``orientation`` (files
    with an affine), optionally resampled to ``pixdim`` mm, resized to ``spatial_size``
    and intensity-scaled so that the 1st/99th percentiles map to 0/1 (clipped), or a fixed
    window ``intensity_range`` to 0/1.

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
    intensity_range : (float, float) or None, default=None
        None: each volume's 1st and 99th percentiles map to 0 and 1 (clipped), which makes
        volumes of uncalibrated intensity (MR) comparable, and also hides how bright a
        volume is overall: lesions that fill more than 1% of a volume raise its 99th
        percentile and darken everything else. ``(a_min, a_max)``: one fixed window for
        every volume (MONAI's ``ScaleIntensityRange``, clipped), for calibrated intensities
        such as CT in Hounsfield units (e.g. ``(-1000, 400)``): a volume's intensities are
        not rescaled by its own brightest voxels. (On the synthetic clinical cohort this did
        not make the scan drill-down localize lesions more often: ``docs/benchmarks.md``.)
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
        ``on_error="missing"`` the row is marked missing). Decoding peaks at ~8 bytes per
        voxel (about 2.1 GB at the default); encoding holds no more, as a volume above
        ``toolkit.io.scan.HOLD_VOXELS`` (4M voxels) is resized to ``spatial_size`` as soon
        as it is read (a chunk of ``batch_size`` items never holds several large ones).
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
        **SCAN_BACKENDS.constraints(),
        "model": [str, None],
        "weights": [str, Path, None],
        "model_kwargs": [dict, None],
        "spatial_size": [tuple, list],
        "pixdim": [tuple, list, None],
        "orientation": [str, None],
        "intensity_range": ["array-like", None],
        "device": [str, None],
        "max_voxels": [Interval(Integral, 1, None, closed="left")],
        "max_resampled_voxels": [Interval(Integral, 1, None, closed="left")],
        "batch_size": AUTO_BATCH,
        **{
            k: v
            for k, v in TRAINING_CONSTRAINTS.items()
            if k not in ("widths", "dropout", "n_networks")
        },
        **FINE_TUNE_CONSTRAINTS,
        "trainable_blocks": depth_constraint(),
    }
    backends = SCAN_BACKENDS
    _cpu_batch_size = 4
    # Models saved before ``intensity_range`` existed were scaled by percentiles.
    intensity_range = None

    def __init__(
        self,
        backend="statistics",
        model=None,
        weights=None,
        model_kwargs=None,
        spatial_size=(64, 64, 64),
        pixdim=None,
        orientation="RAS",
        intensity_range=None,
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
        self.intensity_range = intensity_range
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

    def masker(self):
        """``toolkit.explain.ScanBlocks((2, 2, 2), subdivide=2, fill="blur")``: the parts of a
        volume are 64 blocks nested in 8 (an Owen hierarchy), a masked block blurred."""
        from toolkit.explain.parts import ScanBlocks  # explain sits above the encoders

        return ScanBlocks((2, 2, 2), subdivide=2, fill="blur")

    def read_item(self, value) -> np.ndarray:
        """One volume preprocessed as for encoding: oriented, resampled, resized to
        ``spatial_size`` and intensity-scaled to [0, 1] (float32, on the CPU)."""
        return read_scan(
            value,
            max_voxels=self.max_voxels,
            max_resampled_voxels=self.max_resampled_voxels,
            spatial_size=tuple(self.spatial_size),
            pixdim=self.pixdim,
            orientation=self.orientation,
            intensity_range=self.intensity_range,
        )

    def restore_item(self, item: np.ndarray) -> np.ndarray:
        """A read volume in [0, 1] (or a drill-down's masked copy) mapped back to the units
        of ``intensity_range``, which reading maps to [0, 1] again; unchanged without a
        window (each volume's percentiles map a read volume to itself)."""
        window = check_intensity_range(self.intensity_range)
        if window is None:
            return item
        lo, hi = window
        return (np.asarray(item, dtype=np.float64) * (hi - lo) + lo).astype(np.float32)

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

    def check_settings(self) -> None:
        """Check the settings that need no data (sizes within ``max_resampled_voxels``), so a
        study config is refused by ``mmtk validate`` before any work; ValueError otherwise."""
        self._validate_params()
        check_preprocess(self.spatial_size, self.pixdim, self.max_resampled_voxels)
        check_intensity_range(self.intensity_range)

    def _fit(self, decoded) -> None:
        check_fine_tune(self)
        check_preprocess(self.spatial_size, self.pixdim, self.max_resampled_voxels)
        check_intensity_range(self.intensity_range)
        self.backend_object().fit(self, decoded)

    # -- fine-tuning (FineTuneMixin) ------------------------------------------------------

    def _ft_network(self, n_out: int):
        """The MONAI network with the state dict of ``weights`` and a new head."""
        check_preprocess(self.spatial_size, self.pixdim, self.max_resampled_voxels)
        return self.backend_object().fine_tune_network(self, n_out)

    def _ft_inputs(self, volumes: list):
        """The training volumes (resized and scaled) as one (n, 1, *spatial_size) tensor."""
        import torch

        return torch.stack([v.cpu() for v in volumes])[:, None]

    def _ft_forward(self, net, x, idx):
        return net(x[idx.cpu()].to(self.device_))
