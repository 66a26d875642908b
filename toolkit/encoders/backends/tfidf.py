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

    def vectorizer(self):
        """The unfitted word (1-2) and character (2-5) n-gram TF-IDF union."""
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.pipeline import FeatureUnion

        word = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=50_000)
        char = TfidfVectorizer(
            analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, max_features=50_000
        )
        return FeatureUnion([("word", word), ("char", char)])

    def fit(self, encoder, texts) -> None:
        # Imported here: sklearn.decomposition is 1.5 s of the 22 s `import toolkit.encoders`
        # took on a loaded 2-core machine (python -X importtime), for a backend used only
        # when fitted.
        from sklearn.decomposition import TruncatedSVD

        encoder.vectorizer_ = self.vectorizer()
        where = encoder._where()
        try:
            tfidf = encoder.vectorizer_.fit_transform(texts)
            if tfidf.nnz == 0:  # what a hashing vectorizer gives instead of raising
                raise ValueError("no n-gram in any text")
        except ValueError as exc:  # no token survives (e.g. punctuation or 1-letter words)
            raise ValueError(
                f"TextEncoder(backend={self.name!r}) found no usable words in {where} "
                f"({len(texts)} text(s), e.g. {texts[0][:40]!r}): {exc}. Words need 2 or more "
                "letters or digits; give texts with words, or mark such cells missing (None)"
            ) from exc
        k = min(encoder.n_components, tfidf.shape[1] - 1, len(texts) - 1)
        if k < 1:
            raise ValueError(
                f"TextEncoder(backend={self.name!r}) needs at least 2 distinct texts to fit, got "
                f"{len(texts)} text(s) in {where}"
            )
        encoder.svd_ = TruncatedSVD(n_components=k, random_state=encoder.random_state).fit(tfidf)
        encoder.n_features_out_ = k

    def encode(self, encoder, batch: list) -> np.ndarray:
        from sklearn.preprocessing import normalize

        # Sparse n-gram matrices take about 150 bytes per character of text: texts are
        # vectorized in groups of at most TRANSFORM_CHARS characters (a text longer than
        # that alone), so the peak stays near 150 MB whatever the batch holds.
        out = [
            encoder.svd_.transform(encoder.vectorizer_.transform([batch[i] for i in group]))
            for group in char_groups([len(text) for text in batch], TRANSFORM_CHARS)
        ]
        return normalize(np.vstack(out))


#: Most characters vectorized at once by :meth:`Tfidf.encode` (bounds its peak memory).
TRANSFORM_CHARS = 1_000_000


def char_groups(lengths: list[int], budget: int) -> list[list[int]]:
    """Consecutive positions grouped so that each group's lengths sum to at most ``budget``
    (a longer item forms a group of its own)."""
    groups: list[list[int]] = [[]]
    total = 0
    for i, n in enumerate(lengths):
        if groups[-1] and total + n > budget:
            groups.append([])
            total = 0
        groups[-1].append(i)
        total += n
    return groups if groups[0] else []


class HashingTfidf(Tfidf):
    """``"hashing"``: the same word (1-2) and character (2-5) n-gram TF-IDF and latent
    semantic analysis as ``"tfidf"``, with the n-grams hashed into 2^16 columns per kind
    (scikit-learn's ``HashingVectorizer`` then ``TfidfTransformer``) instead of looked up
    in a vocabulary: a fitted (or saved) encoder keeps no word or n-gram of its training
    texts (``keeps_vocabulary_`` is False), only inverse document frequencies and the SVD
    by hashed column (the columns no training text filled are dropped before the SVD).
    Hash collisions merge rare n-grams (2^16 columns per kind, against the 50,000 most
    frequent n-grams kept by ``"tfidf"``)."""

    name = "hashing"
    #: Hashed columns per n-gram kind (word, character).
    n_features = 2**16

    def vectorizer(self):
        from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
        from sklearn.feature_selection import VarianceThreshold
        from sklearn.pipeline import FeatureUnion, make_pipeline

        def hashed(**kwargs):
            counts = HashingVectorizer(
                n_features=self.n_features, alternate_sign=False, norm=None, **kwargs
            )
            return make_pipeline(counts, TfidfTransformer(sublinear_tf=True))

        ngrams = FeatureUnion(
            [
                ("word", hashed(ngram_range=(1, 2))),
                ("char", hashed(analyzer="char_wb", ngram_range=(2, 5))),
            ]
        )
        # Only the columns the training texts filled reach the SVD: its components are then
        # as wide as the n-grams seen (as with "tfidf"), not 2 x 2^16 dense float64 columns
        # (105 MB at n_components=100).
        return make_pipeline(ngrams, VarianceThreshold(0.0))
