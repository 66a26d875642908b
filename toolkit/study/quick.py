"""A quick run (``mmtk run --quick``, ``quick: true`` in a config): a test-sized run of any
study config, to see that it runs end to end, never to report.

:func:`quick_raw` caps the sizes of a raw config before it is checked (so
``config.resolved.yaml`` holds what ran): 2 folds, 10 bootstrap resamples, one drilled
row of at most 4 exact parts, at most :data:`QUICK_ROWS` generated rows and small generated
images and scans (the source's parameters, where it has them), and small encoders where
the encoder has the parameter (:data:`ENCODER_CAPS`), and fewer inner folds and epochs in
the fusion strategies (:data:`FUSION_CAPS`). Values already smaller are kept, so capping
twice changes nothing. The transfer-across-groups check of a grouped study is skipped. A source that cannot be asked for fewer rows (real data, a
manifest) is cut to about :data:`QUICK_ROWS` rows after loading (:func:`quick_rows`).
The report, ``metrics.json`` and the model card say "quick run — not for reporting".
"""

from __future__ import annotations

import copy
import inspect

import numpy as np

#: Rows of a quick run (generated, or kept from a loaded source): enough for 2 folds whose
#: training rows hold out the 9 calibration rows 90% conformal sets need.
QUICK_ROWS = 80
#: The banner of a quick run's report, headline and metrics.json.
QUICK_NOTE = "quick run — not for reporting"
#: Caps of the evaluation and output keys.
SECTION_CAPS = {
    "evaluation": {"cv": 2, "bootstrap": 10},
    "output": {"drilldown_rows": 1, "drilldown_max_parts": 4},
}
#: Caps of a data source's size parameters (applied where the source has the parameter).
SOURCE_CAPS = {"n_samples": QUICK_ROWS, "scan_size": 12, "xray_size": 16, "image_size": 16}
#: Caps of encoder parameters (applied where the encoder has the parameter); a tuple-valued
#: parameter (``spatial_size``) is capped per entry.
ENCODER_CAPS = {
    "max_epochs": 2, "patience": 1, "n_components": 8, "max_length": 32, "spatial_size": 12,
}  # fmt: skip
#: Caps of fusion parameters (applied where the strategy has the parameter): inner folds
#: and training epochs.
FUSION_CAPS = {"cv": 2, "max_epochs": 10, "patience": 2}


def _capped(value, cap):
    """``value`` capped at ``cap`` (a list or tuple entry by entry); anything that is not a
    number is left for the config checks to refuse."""
    if isinstance(value, list | tuple):
        return [_capped(v, cap) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return min(value, cap)
    return value


#: Encoder parameters whose None means "as large as the model allows" (capped like a number).
UNBOUNDED_WHEN_NONE = {"max_length"}


def _cap_section(node: dict, caps: dict, defaults: dict) -> dict:
    out = dict(node)
    for key, cap in caps.items():
        if key in defaults:
            value = out.get(key, defaults[key])
            out[key] = cap if value is None and key in UNBOUNDED_WHEN_NONE else _capped(value, cap)
    return out


def _source_defaults(source) -> dict:
    from toolkit.datasets import DATASETS

    if not isinstance(source, str) or source not in DATASETS:
        return {}
    params = inspect.signature(DATASETS[source].function).parameters
    return {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}


def _encoder_defaults(encoder) -> dict:
    from toolkit.encoders import ENCODERS

    if not isinstance(encoder, str) or encoder not in ENCODERS:
        return {}
    return ENCODERS[encoder]().get_params()


def _fusion_defaults(name) -> dict:
    from toolkit.fusion import FUSIONS

    if not isinstance(name, str) or name not in FUSIONS:
        return {}
    return FUSIONS[name]().get_params()


def _capped_params(params: dict, caps: dict, found: dict) -> dict:
    """``params`` with ``caps`` applied; only the parameters set or lowered are written."""
    capped = _cap_section(params, caps, found)
    return {k: v for k, v in capped.items() if k in params or v != found.get(k)}


def _quick_fusion(entry):
    """A ``fusion`` entry with :data:`FUSION_CAPS` applied (a bare name becomes a mapping
    when a cap applies)."""
    if isinstance(entry, str):
        entry = {"name": entry, "params": {}}
        bare = True
    elif isinstance(entry, dict) and isinstance(entry.get("params", {}), dict):
        bare = False
    else:
        return entry
    params = _capped_params(
        entry.get("params", {}), FUSION_CAPS, _fusion_defaults(entry.get("name"))
    )
    if bare and not params:
        return entry["name"]
    return {**entry, "params": params}


def quick_raw(raw: dict) -> dict:
    """A copy of the raw config ``raw`` with the quick run's caps applied."""
    from toolkit.study.schema import defaults

    raw, base = copy.deepcopy(raw), defaults()
    for section, caps in SECTION_CAPS.items():
        node = raw.get(section, {})
        if isinstance(node, dict):
            raw[section] = _cap_section(node, caps, base[section])
    data = raw.get("data")
    if isinstance(data, dict) and isinstance(data.get("params", {}), dict):
        found = _source_defaults(data.get("source"))
        data["params"] = _cap_section(data.get("params", {}), SOURCE_CAPS, found)
    for mod in raw.get("modalities") or []:
        if isinstance(mod, dict) and isinstance(mod.get("params", {}), dict):
            found = _encoder_defaults(mod.get("encoder"))
            mod["params"] = _capped_params(mod.get("params", {}), ENCODER_CAPS, found)
    fusion = raw.get("fusion", ["early", "late", "gated"])
    if isinstance(fusion, list):
        raw["fusion"] = [_quick_fusion(entry) for entry in fusion]
    return raw


def quick_rows(y, n: int = QUICK_ROWS, *, classification: bool, seed: int) -> np.ndarray:
    """Sorted positions of about ``n`` rows of ``y`` (seeded): every class keeps its share
    and at least 4 rows (all it has when fewer), so the folds of a quick run still find each
    class. All positions when ``y`` has ``n`` rows or fewer."""
    y = np.asarray(y)
    if len(y) <= n:
        return np.arange(len(y))
    order = np.random.RandomState(seed).permutation(len(y))
    if not classification:
        return np.sort(order[:n])
    keep = []
    for c in np.unique(y):
        rows = order[y[order] == c]
        keep.extend(rows[: max(min(len(rows), 4), round(n * len(rows) / len(y)))])
    return np.sort(np.asarray(keep))
