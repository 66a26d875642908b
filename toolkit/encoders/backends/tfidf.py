"""Text backend ``"tfidf"``: word and character n-gram TF-IDF reduced by latent semantic
analysis, fitted on the training column (no weights)."""

from __future__ import annotations

from numbers import Integral

import numpy as np
from sklearn.utils._param_validation import Interval

from toolkit.encoders.backends.base import Backend


class Tfidf(Backend):
    """Word (1-2) and character (2-5) n-gram TF-IDF, TruncatedSVD to ``n_components``,
    L2-normalized. Its output depends on the texts it was fitted on (not ``fixed``)."""

    name = "tfidf"
    parameters = ("n_components", "random_state")
    constraints = {"n_components": [Interval(Integral, 1, None, closed="left")]}
    fixed = False
    fit_on_items = True
    feature_prefix = "text_lsa"

    def example(self, folder) -> dict:
        return {"n_components": 3, "random_state": 0}

    def fit(self, encoder, texts) -> None:
        # Imported here: sklearn.decomposition is 1.5 s of the 22 s `import toolkit.encoders`
        # took on a loaded 2-core machine (python -X importtime), for a backend used only
        # when fitted.
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.pipeline import FeatureUnion

        word = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=50_000)
        char = TfidfVectorizer(
            analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, max_features=50_000
        )
        encoder.vectorizer_ = FeatureUnion([("word", word), ("char", char)])
        where = encoder._where()
        try:
            tfidf = encoder.vectorizer_.fit_transform(texts)
        except ValueError as exc:  # no token survives (e.g. punctuation or 1-letter words)
            raise ValueError(
                f"TextEncoder(backend='tfidf') found no usable words in {where} "
                f"({len(texts)} text(s), e.g. {texts[0][:40]!r}): {exc}. Words need 2 or more "
                "letters or digits; give texts with words, or mark such cells missing (None)"
            ) from exc
        k = min(encoder.n_components, tfidf.shape[1] - 1, len(texts) - 1)
        if k < 1:
            raise ValueError(
                f"TextEncoder(backend='tfidf') needs at least 2 distinct texts to fit, got "
                f"{len(texts)} text(s) in {where}"
            )
        encoder.svd_ = TruncatedSVD(n_components=k, random_state=encoder.random_state).fit(tfidf)
        encoder.n_features_out_ = k

    def encode(self, encoder, batch: list) -> np.ndarray:
        from sklearn.preprocessing import normalize

        return normalize(encoder.svd_.transform(encoder.vectorizer_.transform(batch)))
