"""What a model file may construct: exact dotted names (the toolkit's own classes, builtin
containers, numpy, pathlib, scikit-learn), the skops node kinds, and the checks of loaded
objects whose settings act like code (text vectorizers, a cache).
"""

from __future__ import annotations

import re
from pathlib import Path, PosixPath, PurePosixPath, PureWindowsPath, WindowsPath

from sklearn.feature_extraction.text import CountVectorizer, HashingVectorizer
from skops.io import _trusted_types as skt

from toolkit.persistence.files import (
    _ESTIMATOR_TYPES,
    MAX_SCHEMA_DEPTH,
    ModelFileError,
    UntrustedTypeError,
)


def toolkit_types() -> frozenset[str]:
    """The toolkit's own classes that ``save`` writes into ``model.skops``, by exact name:
    the estimators, the block scaler, and every class in the fusion and encoder registries
    (so a strategy registered with one line is also loadable)."""
    # the registries import torch: read on first use, so importing persistence stays light
    from toolkit.encoders import ENCODERS
    from toolkit.fusion import FUSIONS
    from toolkit.fusion.base import BlockScaler

    classes = [BlockScaler, *FUSIONS.values(), *ENCODERS.values()]
    return _ESTIMATOR_TYPES | frozenset(f"{c.__module__}.{c.__qualname__}" for c in classes)


_BUILTIN_TYPES = frozenset(
    f"builtins.{name}"
    for name in (
        "bool",
        "int",
        "float",
        "complex",
        "str",
        "bytes",
        "bytearray",
        "list",
        "tuple",
        "dict",
        "set",
        "frozenset",
        "slice",
    )
) | {"collections.OrderedDict", "collections.defaultdict"}


_NUMPY_TYPES = frozenset({"numpy.ndarray", "numpy.dtype", "numpy.random.RandomState"})


#: Paths (e.g. an encoder's ``memory`` or file parameter given as a Path).
_PATH_TYPES = frozenset(
    f"{cls.__module__}.{cls.__qualname__}"
    for cls in (PurePosixPath, PureWindowsPath, PosixPath, WindowsPath)
)


#: Scikit-learn classes the toolkit's components hold (the rest come from skops's list).
_SKLEARN_TYPES = frozenset(
    {
        "sklearn.compose._column_transformer.ColumnTransformer",
        "sklearn.decomposition._truncated_svd.TruncatedSVD",
        "sklearn.feature_extraction.text.TfidfTransformer",
        "sklearn.feature_extraction.text.TfidfVectorizer",
        "sklearn.impute._base.MissingIndicator",
        "sklearn.impute._base.SimpleImputer",
        "sklearn.linear_model._base.LinearRegression",
        "sklearn.linear_model._logistic.LogisticRegression",
        "sklearn.linear_model._ridge.Ridge",
        "sklearn.pipeline.FeatureUnion",
        "sklearn.pipeline.Pipeline",
        "sklearn.preprocessing._data.StandardScaler",
        "sklearn.preprocessing._encoders.OneHotEncoder",
        "sklearn.preprocessing._label.LabelEncoder",
    }
)


# skops node kinds that hold data, and those that call or fetch code (only with trusted=).
_DATA_LOADERS = frozenset(
    {
        "BytearrayNode",
        "BytesNode",
        "CachedNode",
        "DTypeNode",
        "DefaultDictNode",
        "DictNode",
        "JsonNode",
        "ListNode",
        "LossNode",
        "MaskedArrayNode",
        "NdArrayNode",
        "ObjectNode",
        "RandomGeneratorNode",
        "RandomStateNode",
        "SetNode",
        "SliceNode",
        "SparseMatrixNode",
        "TreeNode",
        "TupleNode",
        "TypeNode",
    }
)


_CODE_LOADERS = frozenset(
    {"FunctionNode", "MethodNode", "PartialNode", "OperatorFuncNode", "ConstructorFromReduceNode"}
)


_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+\Z")


#: sentence-transformers module classes a saved sentence encoder may name in modules.json.
_SENTENCE_MODULES = frozenset(
    {
        f"sentence_transformers.models.{n}"
        for n in ("Transformer", "Pooling", "Normalize", "Dense", "Dropout", "LayerNorm")
    }
    | {
        "sentence_transformers.base.modules.transformer.Transformer",
        "sentence_transformers.base.modules.normalize.Normalize",
        "sentence_transformers.base.modules.dense.Dense",
        "sentence_transformers.sentence_transformer.modules.pooling.Pooling",
        "sentence_transformers.sentence_transformer.modules.dropout.Dropout",
        "sentence_transformers.sentence_transformer.modules.layer_norm.LayerNorm",
    }
)


def trusted_types() -> frozenset[str]:
    """Every dotted name :func:`load` constructs without being told (exact names, no prefix)."""
    return (
        toolkit_types()
        | _BUILTIN_TYPES
        | _NUMPY_TYPES
        | _PATH_TYPES
        | frozenset(skt.NUMPY_DTYPE_TYPE_NAMES)
        | frozenset(skt.NUMPY_RANDOM_BIT_GENERATOR_TYPE_NAMES)
        | _SKLEARN_TYPES
        | frozenset(skt.SKLEARN_ESTIMATOR_TYPE_NAMES)
        | frozenset(skt.SKLEARN_INTERNAL_TYPE_NAMES)
    )


def _schema_names(schema, where: str) -> set[tuple[str, str]]:
    """Every (node kind, dotted name) a skops schema references, walked without recursion."""
    names = set()
    stack = [(schema, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_SCHEMA_DEPTH:
            raise ModelFileError(f"{where}: the schema nests deeper than {MAX_SCHEMA_DEPTH}")
        if isinstance(node, dict):
            loader = node.get("__loader__")
            if loader is not None:
                if not isinstance(loader, str) or loader not in _DATA_LOADERS | _CODE_LOADERS:
                    raise UntrustedTypeError(f"{where}: unknown skops node kind {loader!r}")
                if loader != "CachedNode":
                    module, cls = node.get("__module__"), node.get("__class__")
                    if not isinstance(module, str) or not isinstance(cls, str):
                        raise ModelFileError(f"{where}: a {loader} has no module or class name")
                    name = f"{module}.{cls}"
                    if loader == "MethodNode":
                        name = f"{name}.{(node.get('content') or {}).get('func')}"
                    names.add((loader, name))
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return names


_DEFAULT_TOKEN_PATTERN = r"(?u)\b\w\w+\b"


def _check_vectorizer(vec, path: Path) -> None:
    """A text vectorizer in a model file: only the settings the toolkit uses. Its regular
    expression and input mode are data that act like code (a crafted pattern can take
    exponential time; ``input="filename"`` would read files named by the text)."""
    ngram = getattr(vec, "ngram_range", None)
    problems = {
        "input": vec.input == "content",
        "tokenizer": vec.tokenizer is None,
        "preprocessor": vec.preprocessor is None,
        "analyzer": vec.analyzer in ("word", "char", "char_wb"),
        "token_pattern": vec.token_pattern in (None, _DEFAULT_TOKEN_PATTERN),
        "encoding": vec.encoding == "utf-8",
        "decode_error": vec.decode_error in ("strict", "ignore", "replace"),
        "strip_accents": vec.strip_accents in (None, "ascii", "unicode"),
        "ngram_range": isinstance(ngram, tuple)
        and len(ngram) == 2
        and all(isinstance(n, int) and 1 <= n <= 10 for n in ngram)
        and ngram[0] <= ngram[1],
    }
    odd = sorted(k for k, ok in problems.items() if not ok)
    if odd:
        raise UntrustedTypeError(
            f"model '{path}': a {type(vec).__name__} has settings the toolkit never writes: "
            f"{[(k, getattr(vec, k, None)) for k in odd]}; refused"
        )


def _check_plain_data(model, path: Path) -> None:
    """Walk the loaded toolkit and scikit-learn objects for settings that act like code."""
    seen, stack = set(), [model]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, CountVectorizer | HashingVectorizer):
            _check_vectorizer(obj, path)
        if isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple):
            stack.extend(obj)
        elif type(obj).__module__.split(".")[0] in ("toolkit", "sklearn"):
            stack.extend(getattr(obj, "__dict__", {}).values())
    if getattr(model, "memory", None) is not None:
        raise UntrustedTypeError(
            f"model '{path}': the file sets memory={model.memory!r}; saved models carry no "
            "cache (set one after loading with set_params(memory=...))"
        )
