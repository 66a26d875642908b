"""``import toolkit`` stays light: heavy libraries load only when first used."""

from __future__ import annotations

import subprocess
import sys

HEAVY = (
    "torch",
    "monai",
    "transformers",
    "shap",
    "torchaudio",
    "torchvision",
    "dask",
    "distributed",
)


def _loaded_after(statement: str) -> list[str]:
    code = f"import sys\n{statement}\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_import_toolkit_loads_no_heavy_library():
    assert _loaded_after("import toolkit") == []


def test_estimator_import_loads_no_heavy_library():
    assert (
        _loaded_after("from toolkit import MultimodalClassifier, TextEncoder, ModalityExplainer")
        == []
    )


def test_unknown_attribute():
    import pytest

    import toolkit

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        toolkit.Nope  # noqa: B018


def test_encoding_in_memory_scans_does_not_import_monai():
    # Only a MONAI MetaTensor carries an affine to orient or resample; plain arrays are
    # read without MONAI (a loky worker or a drill-down's thousand reads never import it).
    statement = (
        "import numpy as np\nfrom toolkit import ScanEncoder\n"
        "v = [np.random.default_rng(0).gamma(2.0, size=(8, 9, 10)) for _ in range(3)]\n"
        "ScanEncoder(spatial_size=(8, 8, 8), progress=False).fit(v).encode(v)"
    )
    assert _loaded_after(statement) == ["torch"]
