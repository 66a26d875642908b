"""Text encoder: TF-IDF + LSA by default; transformers (optionally fine-tuned on the labels)
or sentence-transformers backends."""

from __future__ import annotations

from numbers import Integral
from pathlib import Path

import numpy as np
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from toolkit._utils import tensor_table
from toolkit.encoders._text_checks import MAX_CHARS, holds_vocabulary, refuse_path_column
from toolkit.encoders._text_finetune import FINE_TUNE_CONSTRAINTS
from toolkit.encoders.backends import TEXT_BACKENDS
from toolkit.encoders.base import AUTO_BATCH, BaseEncoder
from toolkit.exceptions import ReadError
from toolkit.io.text import read_text


class TextEncoder(BaseEncoder):
    """Encode a column of strings as a dense float32 block.

    Parameters
    ----------
    backend : {"tfidf", "hashing", "transformers", "sentence-transformers"}, default="tfidf"
        ``"tfidf"``: word (1-2) and character (2-5) n-gram TF-IDF reduced with
        TruncatedSVD (latent semantic analysis), L2-normalized; fitted on the training
        column, needs no weights; the fitted (and saved) encoder keeps the vocabulary of
        its training texts. ``"hashing"``: the same with the n-grams hashed into 2^16
        columns per kind (scikit-learn's HashingVectorizer + TfidfTransformer), so no word
        of the training texts is kept (see ``keeps_vocabulary_``).
        ``"transformers"``: a ``transformers`` AutoModel and
        AutoTokenizer loaded from ``model``, mean-pooled over tokens with dynamic padding and
        length-sorted batches; it can be fine-tuned on the labels (``fine_tune``).
        ``"sentence-transformers"``: a SentenceTransformer from ``model`` (frozen).
    model : str or path, default=None
        Local folder (or explicit hub id) of the pretrained model. None (pretrained
        backends): the offline all-MiniLM-L6-v2 of the ``embed`` extra; with
        ``backend="transformers"`` its BERT body is loaded and mean-pooled (what the
        sentence-transformers model computes before its normalization), which is the way
        to fine-tune it.
    n_components : int, default=100
        Output width of the TF-IDF backend (capped by the vocabulary and sample sizes).
    max_length : int or None, default=None
        Token limit per text for the transformers backend (longer texts are truncated);
        above the model's own limit (its tokenizer's ``model_max_length`` or config's
        ``max_position_embeddings``) it is refused when the model is loaded. None: 256 or
        the model's limit, whichever is lower (``max_length_`` after fitting).
    normalize : bool, default=False
        L2-normalize pretrained embeddings.
    batch_size : int or "auto", default="auto"
        Texts per batch. ``"auto"``: on a CUDA device, batches of token-length-sorted
        texts holding up to 32,768 padded tokens (``toolkit.encoders._batching``), the next
        batch padded in a background thread while the device runs the current one; on the
        CPU (and for fine-tuning and the sentence-transformers backend) 32. An integer
        fixes the texts per batch.
    device : str, default="auto"
        ``"auto"`` uses CUDA when available. Fine-tuning on CUDA runs in bfloat16 autocast.
    random_state : int, RandomState or None
        Seeds the TruncatedSVD, and fine-tuning (head initialization, batch order,
        dropout, validation split): on the CPU the same seed and data give identical
        weights.
    on_error : {"raise", "missing"}, default="raise"
        What to do with a cell that is not a string.
    progress : bool, default=True
        Show a progress bar on long encoding work.
    fine_tune : bool or "top", default=False
        ``backend="transformers"`` only. ``True`` or ``"top"`` (the same, as for the other
        encoders' ``fine_tune``; no adapters): train the top ``trainable_layers`` transformer
        layers and a linear head on the mean-pooled tokens with the labels, inside
        ``fit(X, y, groups)`` (AdamW, early stopping on the validation loss of an inner
        split of the rows, whole groups when ``groups`` are given). The encoder is then
        ``supervised`` (never cached; the estimators give the fusion its out-of-fold head
        outputs, see :meth:`encode_scores`); the other layers stay frozen bit for bit.
    trainable_layers : int, default=2
        Top transformer layers unfrozen by ``fine_tune`` (0: the head alone).
    max_epochs : int, default=8
        Most passes over the training rows when fine-tuning.
    patience : int, default=2
        Epochs without a lower validation loss before fine-tuning stops (the best epoch's
        weights are kept).
    learning_rate : float, default=1e-4
        AdamW learning rate of the unfrozen layers and the head.
    weight_decay : float, default=0.01
        AdamW weight decay.
    dropout : float, default=0.1
        Dropout on the pooled states before the head (training only).
    validation_fraction : float, default=0.1
        Share of the training rows held out for early stopping (none below 20 rows or at
        0: the training loss is monitored instead).
    verbose : bool, default=False
        Show a per-epoch progress bar (losses) while fine-tuning.
    max_chars : int, default=MAX_CHARS (100,000)
        Most characters in one cell, at fit and at encode time: a longer text is refused
        (a ReadError naming the row, the column, its length and this limit; with
        ``on_error="missing"`` it is marked missing with a warning) before any backend
        sees it. Cost grows with the text: TF-IDF takes about 150 bytes per character.

    Cells are the texts themselves: a column whose every cell names a file (``.txt``
    paths, or paths of existing files) is refused with the fix (read the files first),
    since encoding the path strings would silently give features of the file names.

    Attributes
    ----------
    n_features_out_ : int
    vectorizer_, svd_ : fitted TF-IDF and SVD (tfidf and hashing backends)
    keeps_vocabulary_ : bool
        Whether the fitted encoder (and so a saved model) holds words or n-grams of its
        training texts (a vectorizer with a ``vocabulary_``): True for ``"tfidf"``, False
        for ``"hashing"`` and the pretrained backends (their tokenizer's vocabulary is the
        pretrained model's, not the training data's).
    max_length_ : int
        Tokens per text used by the transformers backend.
    model_, tokenizer_ : loaded pretrained model (pretrained backends)
    head_ : torch.nn.Linear
        Fine-tuned head (``fine_tune=True``), described by ``head_spec_``.
    history_ : list of dict
        Per epoch of fine-tuning: ``epoch``, ``train_loss`` and ``valid_loss``.
    best_epoch_, n_epochs_ : int
        Epoch whose weights were kept, and epochs run.
    trained_parameters_ : list of str
        Names of the model's parameters that fine-tuning changed (the top layers).

    Examples
    --------
    >>> from toolkit import TextEncoder
    >>> enc = TextEncoder(n_components=2, random_state=0)
    >>> enc.fit_transform(["good film", "bad film", "great acting", None]).shape
    (4, 2)

    Fine-tuning the offline MiniLM (``embed`` extra) inside a model's ``fit``:

    >>> from toolkit import MultimodalClassifier
    >>> enc = TextEncoder(backend="transformers", fine_tune=True, trainable_layers=2)
    >>> clf = MultimodalClassifier([("text", enc, "review")], random_state=0)
    >>> enc.supervised, enc.fixed
    (True, False)
    """

    modality = "text"
    _parameter_constraints = {
        **BaseEncoder._parameter_constraints,
        **TEXT_BACKENDS.constraints(),
        "model": [str, Path, None],
        "normalize": ["boolean"],
        "batch_size": AUTO_BATCH,
        "device": [str, None],
        "random_state": ["random_state"],
        "max_chars": [Interval(Integral, 1, None, closed="left")],
        **FINE_TUNE_CONSTRAINTS,
    }
    torch_attributes = (*BaseEncoder.torch_attributes, "head_")
    backends = TEXT_BACKENDS

    def __init__(
        self,
        backend="tfidf",
        model=None,
        n_components=100,
        max_length=None,
        normalize=False,
        batch_size="auto",
        device="auto",
        random_state=None,
        on_error="raise",
        progress=True,
        fine_tune=False,
        trainable_layers=2,
        max_epochs=8,
        patience=2,
        learning_rate=1e-4,
        weight_decay=0.01,
        dropout=0.1,
        validation_fraction=0.1,
        verbose=False,
        max_chars=MAX_CHARS,
    ):
        self.backend = backend
        self.model = model
        self.n_components = n_components
        self.max_length = max_length
        self.normalize = normalize
        self.batch_size = batch_size
        self.device = device
        self.random_state = random_state
        self.on_error = on_error
        self.progress = progress
        self.fine_tune = fine_tune
        self.trainable_layers = trainable_layers
        self.max_epochs = max_epochs
        self.patience = patience
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.validation_fraction = validation_fraction
        self.verbose = verbose
        self.max_chars = max_chars

    @property
    def supervised(self) -> bool:
        """Whether this encoder learns from the labels (``fine_tune=True``)."""
        return bool(self.fine_tune)

    @property
    def fixed(self) -> bool:
        """Output independent of the fitting data: a frozen pretrained model (cacheable)."""
        if self.backend not in self.backends:
            return False
        return self.backend_object().fixed and not self.supervised

    def fit(self, X, y=None, groups=None):
        """Fit the encoder on one column of strings (and, when fine-tuning, their labels).

        Parameters
        ----------
        X : pandas Series, list or 1-D array of shape (n_samples,)
            Strings; missing cells are skipped (and so are their labels).
        y : array-like of shape (n_samples,), default=None
            Needed by ``fine_tune=True``: class labels (integers, strings; class codes
            0..K-1 are kept as they are) or float regression targets. Ignored otherwise.
        groups : array-like of shape (n_samples,), default=None
            Group of each row (patient, speaker): the early-stopping validation rows are
            then whole groups. Used by ``fine_tune=True`` only.

        Returns
        -------
        self
        """
        if not self.supervised:
            return super().fit(X, y)
        self._validate_params()
        if not self.backend_object().can_fine_tune:
            raise ValueError(
                f"fine_tune=True trains a transformers model; backend={self.backend!r} cannot "
                "be fine-tuned: use backend='transformers' (model=None loads the offline "
                "all-MiniLM-L6-v2 of the 'embed' extra) or leave fine_tune=False"
            )
        self._check_n_jobs()
        from toolkit.encoders._text_finetune import fine_tune, labelled_texts

        texts, target, classify, n_out, groups = labelled_texts(self, X, y, groups)
        self._fit(None)
        fine_tune(self, texts, target, classify, n_out, groups)
        return self

    def _chunk_size(self) -> int:
        # Strings are small: hand many to the model so that length sorting pays off.
        return self._batch_items() * 64

    def _read(self, item):
        return self._checked_length(read_text(item))

    def _checked_length(self, text: str | None) -> str | None:
        """``text``, or a ReadError when it is longer than ``max_chars``."""
        limit = getattr(self, "max_chars", MAX_CHARS)  # a model saved before max_chars
        if text is not None and len(text) > limit:
            raise ReadError(
                f"text of {len(text):,} characters is longer than max_chars={limit:,} "
                f"(starts {text[:30]!r}); shorten or split it, or raise the limit with "
                f"TextEncoder(max_chars={len(text)})"
            )
        return text

    def _column(self, X):
        items, labels, name = super()._column(X)
        refuse_path_column(items, labels, self._where())
        return items, labels, name

    @property
    def keeps_vocabulary_(self) -> bool:
        """Whether the fitted encoder holds words or n-grams of its training texts (a
        vectorizer with a ``vocabulary_``); see the class docstring."""
        check_is_fitted(self, "n_features_out_")
        return holds_vocabulary(getattr(self, "vectorizer_", None))

    def masker(self):
        """``toolkit.explain.Clauses()``: the parts of a text are its clauses, a negation
        cue and its scope in one part (``toolkit.explain.Words()`` splits words)."""
        from toolkit.explain.text_parts import Clauses  # explain sits above the encoders

        return Clauses()

    def read_item(self, value) -> str:
        """The text of one item ("" for a missing one)."""
        return self._checked_length(read_text(value)) or ""

    def _tokenize(self, texts: list[str]):
        from toolkit.encoders.backends.hub import rust_panics

        with rust_panics(getattr(self, "model_location_", self.model), "tokenizing"):
            enc = self.tokenizer_(
                texts, padding=True, truncation=True, max_length=self.max_length_,
                return_tensors="pt",
            )  # fmt: skip
        return enc.to(self.device_)

    def _pool(self, enc):
        """Mean of the model's last hidden states over the real (unpadded) tokens."""
        hidden = self.model_(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)

    def _transformers_embed(self, texts: list[str]) -> np.ndarray:
        return self._pooled_output(self._pool(self._tokenize(texts))).float().cpu().numpy()

    def encode_scores(self, X) -> tuple[np.ndarray, np.ndarray]:
        """The fine-tuned head's outputs (class scores, or the standardized regression
        prediction) and the availability vector, as :meth:`encode` returns its features.

        Each column means the same thing whichever rows trained the model (unlike the pooled
        states): the estimators cross-fit these for the fusion's training rows.
        """
        check_is_fitted(self, "head_")
        saved = self.n_features_out_
        self.n_features_out_ = int(self.head_spec_["n_out"])
        self._emit_scores = True
        try:
            return self.encode(X)
        finally:
            del self._emit_scores
            self.n_features_out_ = saved

    def _embed_tokens(self, tokens: list[dict]) -> np.ndarray:
        """Embed texts tokenized by ``_finish_reads``: token-length-sorted batches (similar
        lengths share a batch, so little is padded), sized by ``batch_size`` or, with
        ``"auto"`` on a GPU, by a token budget; on a GPU the next batch is padded and
        pinned in a background thread and copied without blocking, and the pooled
        vectors stay on the device until the chunk is done."""
        import torch

        from toolkit.encoders._batching import (
            AUTO,
            Prefetcher,
            fixed_batches,
            gpu_budget,
            is_cuda,
            plan_batches,
            to_device,
        )

        lengths = np.fromiter((len(t["input_ids"]) for t in tokens), np.int64, len(tokens))
        order = np.argsort(-lengths, kind="stable")
        budget = gpu_budget(self.device_, "tokens") if self.batch_size == AUTO else None
        if budget is None:
            size = self._cpu_batch_size if self.batch_size == AUTO else int(self.batch_size)
            plan = fixed_batches(len(order), size)
        else:
            plan = plan_batches(lengths[order], budget)
        rows = [order[b] for b in plan]
        cuda = is_cuda(self.device_)
        batches = Prefetcher(
            rows,
            lambda idx: self._pad([tokens[i] for i in idx]),
            names=[f"texts of batch {k} ({len(r)} texts)" for k, r in enumerate(rows)],
            threaded=cuda,
            pin_memory=cuda,
        )
        outputs = []
        with torch.inference_mode():
            for batch in batches:
                outputs.append(self._pooled_output(self._pool(to_device(batch, self.device_))))
        out = np.empty((len(tokens), outputs[0].shape[1]), dtype=np.float32)
        out[np.concatenate(rows)] = torch.cat(outputs).float().cpu().numpy()
        return out

    def _pad(self, tokens: list[dict]) -> dict:
        """Pad tokenized texts on the right to the longest (the tokenizer's pad token and pad
        token type), as int64 tensors. Always on the right, whatever the tokenizer's
        ``padding_side``: every real token then keeps the position it has unpadded, so a
        text's pooled vector does not depend on its batch (left padding shifts the absolute
        positions of BERT-like models)."""
        import torch

        tok = self.tokenizer_
        if tok.pad_token_id is None:
            raise ValueError(
                f"the tokenizer of '{self.model}' has no padding token, so texts of different "
                "lengths cannot share a batch; set tokenizer.pad_token and save it again"
            )
        width = max(len(t["input_ids"]) for t in tokens)
        fill = {"input_ids": tok.pad_token_id, "attention_mask": 0}
        fill["token_type_ids"] = getattr(tok, "pad_token_type_id", 0)
        fill["special_tokens_mask"] = 1
        out = {}
        for key in tokens[0]:
            if key not in fill:
                return tok.pad(tokens, padding=True, padding_side="right", return_tensors="pt")
            arr = np.full((len(tokens), width), fill[key], dtype=np.int64)
            for r, t in enumerate(tokens):
                arr[r, : len(t[key])] = t[key]
            out[key] = torch.from_numpy(arr)
        return out

    def _pooled_output(self, pooled):
        """What the encoder outputs from pooled states: the fine-tuned head's scores
        (``encode_scores``), the normalized or the plain pooled vectors (on the device)."""
        import torch

        if getattr(self, "_emit_scores", False):
            return self.head_(pooled.float())
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=1)
        return pooled

    # -- persistence protocol (toolkit.save / toolkit.load) -------------------------------

    def weight_parameters(self) -> tuple[str, ...]:
        """``("model", "head")`` when fine-tuned (the tuned model's folder and the head's
        safetensors file), else the base's."""
        if self.supervised and self.backend_object().can_fine_tune:
            return ("model", "head")
        return super().weight_parameters()

    def save_weights(self, folder) -> dict[str, str] | None:
        """The tuned model's ``save_pretrained`` folder and ``head.safetensors``."""
        params = super().save_weights(folder)
        if params is None or not self.supervised:
            return params
        from pathlib import Path

        from toolkit.encoders._torch import save_state_dict

        save_state_dict(self.head_, Path(folder) / "head.safetensors")
        return {**params, "head": "head.safetensors"}

    def expected_weights(self) -> dict[str, dict] | None:
        """Tensor names, dtypes and shapes of the fine-tuned head, built on the meta device
        (the model's folder is checked as any transformers folder is)."""
        if not self.supervised:
            return super().expected_weights()
        import torch

        from toolkit.encoders._text_finetune import build_head

        check_is_fitted(self, "head_spec_")
        with torch.device("meta"):
            head = build_head(self.head_spec_)
        return tensor_table(head.state_dict())

    def load_weights(self, paths: dict[str, str]) -> None:
        """Load the tuned model (from its folder, offline) and the head on the CPU (nothing
        is trained again)."""
        if not self.supervised:
            return super().load_weights(paths)
        if set(paths) != {"model", "head"}:
            raise ValueError(
                f"TextEncoder(fine_tune=True) is restored from ['head', 'model'], got "
                f"{sorted(paths)}"
            )
        from safetensors.torch import load_file

        from toolkit.encoders._text_finetune import build_head

        check_is_fitted(self, "head_spec_")
        self.model, self.device = paths["model"], "cpu"
        self._restoring = True  # the saved folder must fill the network it describes
        try:
            self._fit(None)
        finally:
            del self._restoring
        head = build_head(self.head_spec_)
        if head.in_features != self.n_features_out_:
            raise ValueError(
                f"the saved head reads {head.in_features} features but the saved model gives "
                f"{self.n_features_out_}"
            )
        head.load_state_dict(load_file(paths["head"]), strict=True)
        self.head_ = head.eval()
        return None
