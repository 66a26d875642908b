"""What a study writes: its run folder and status, the resolved config and environment,
each finished fold, the tables (``metrics.json``, ``metrics.csv``, ``predictions.csv``,
``contributions.csv``) and the refitted model. Figures and the HTML report are in
:mod:`toolkit.study.report`."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
import traceback
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from sklearn.base import clone

from toolkit.explain import modality_shares
from toolkit.study.config import check_name
from toolkit.utils import package_versions

STATUS_FILE = "status.json"
FAILED_FILE = "FAILED"
#: Distributions whose versions ``environment.json`` records.
RECORDED_PACKAGES = (
    "multimodal-toolkit", "numpy", "pandas", "scikit-learn", "torch", "torchaudio",
    "transformers", "monai", "shap",
)  # fmt: skip


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


# -- the run folder and its status ----------------------------------------------------------


def out_root(out_dir) -> Path:
    """``out_dir`` made (if needed) and resolved; a file in its place is refused."""
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out '{out}' is a file, not a folder; choose a folder")
    out.mkdir(parents=True, exist_ok=True)
    return out.resolve()


def make_run_folder(root: Path, name: str, stamp: str) -> Path:
    """A new, real folder ``<root>/<name>-<stamp>[-k]`` that lies inside ``root``."""
    check_name(name, "name")
    base = f"{name}-{stamp}"
    for k in range(1, 1000):
        folder = root / (base if k == 1 else f"{base}-{k}")
        if folder.is_symlink():
            raise FileExistsError(
                f"'{folder}' is a symbolic link (to '{os.readlink(folder)}'), not a run folder; "
                "remove it: run folders are never made through links"
            )
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        real = folder.resolve()
        if folder.is_symlink() or real.parent != root or not real.is_relative_to(root):
            raise FileExistsError(f"run folder '{folder}' resolves to '{real}', outside '{root}'")
        return real
    raise FileExistsError(f"no free run folder name '{base}-k' in '{root}'")


def write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` as JSON, replacing ``path`` atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, path)


def mark_running(run: Path) -> None:
    write_json(run / STATUS_FILE, {"status": "running", "started": _now(), "pid": os.getpid()})


def mark_complete(run: Path) -> None:
    write_json(run / STATUS_FILE, {"status": "complete", "finished": _now()})


def mark_failed(run: Path, exc: BaseException) -> None:
    """``status.json`` -> failed (with the error) and a ``FAILED`` file with the traceback."""
    error = f"{type(exc).__name__}: {exc}".strip()
    when = _now()
    try:
        (run / FAILED_FILE).write_text(
            f"This study failed at {when}; its results are incomplete.\n{error}\n\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        )
        write_json(run / STATUS_FILE, {"status": "failed", "finished": when, "error": error})
    except OSError:  # the disk that failed the run may fail this too; keep the first error
        pass


# -- inputs: config and environment ---------------------------------------------------------


def environment(config, command: str | None) -> dict:
    """Command, seed, start time, Python, machine and package versions of a run."""
    return {
        "command": command or " ".join(sys.argv),
        "seed": config.seed,
        "started": _now(),
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {platform.system()} {os.cpu_count()} cores",
        "versions": package_versions(RECORDED_PACKAGES),
    }


def write_inputs(run: Path, config, command: str | None) -> None:
    """``config.resolved.yaml`` (``config.to_dict()``: every key with its default filled
    in; not the config file's path) and ``environment.json``."""
    (run / "config.resolved.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    (run / "environment.json").write_text(json.dumps(environment(config, command), indent=2))


# -- outputs --------------------------------------------------------------------------------


def write_fold(folder: Path, result) -> Path:
    """``fold_<k>.json``: a finished fold's test rows and every model's output on them."""
    record = {"fold": result.fold, "test_index": np.asarray(result.test_index).tolist()}
    outputs = {**result.oof, **result.baselines}
    record.update({label: np.asarray(v).tolist() for label, v in outputs.items()})
    path = folder / f"fold_{result.fold}.json"
    path.write_text(json.dumps(record))
    return path


def _predictions_table(results, group_column: str | None = None) -> pd.DataFrame:
    y, classes = results.y, results.classes
    columns = {"row": np.arange(len(y)), "fold": results.fold_of}
    if group_column is not None:
        columns[group_column] = results.groups
    columns["y_true"] = classes[y] if results.classification else y
    for label, pred in results.models.items():
        if results.classification and pred.shape[1] == 2:
            columns[f"{label}_proba"] = pred[:, 1]
        elif results.classification:
            columns[f"{label}_pred"] = classes[np.argmax(pred, axis=1)]
        else:
            columns[f"{label}_pred"] = pred
    return pd.DataFrame(columns)


def _contributions_table(results, best: str) -> pd.DataFrame | None:
    """One row per (row, modality) of the best strategy; multi-class: the predicted class."""
    values = results.contributions[best]
    if np.isnan(values).all():
        return None
    n, names = len(results.y), results.names
    if values.ndim == 3:
        chosen = np.argmax(results.oof[best], axis=1)
        values = values[np.arange(n), :, chosen]
    share = modality_shares(values, per_sample=True)
    return pd.DataFrame(
        {
            "row": np.repeat(np.arange(n), len(names)),
            "fold": np.repeat(results.fold_of, len(names)),
            "strategy": best,
            "modality": np.tile(names, n),
            "contribution": values.ravel(),
            "share": share.ravel(),
        }
    )


def _interactions_table(summary: dict) -> pd.DataFrame | None:
    """``interactions.csv``: the explained model's mean |main effect| per modality and mean
    |interaction index| per pair, with their shares of the total and the share of a pair's
    rows that are synergy rather than redundancy (as in metrics.json)."""
    inter = summary.get("interactions") or {}
    if not inter:
        return None
    rows = [
        {"strategy": inter["model"], "kind": "main effect", "modality_a": m, "modality_b": m,
         "mean_abs": v["mean_abs"], "share": v["share"], "synergy_rows": None}
        for m, v in inter["main_effects"].items()
    ] + [
        {"strategy": inter["model"], "kind": "pair", "modality_a": p["modalities"][0],
         "modality_b": p["modalities"][1], "mean_abs": p["mean_abs_interaction"],
         "share": p["share"], "synergy_rows": p.get("synergy")}
        for p in inter["pairs"]
    ]  # fmt: skip
    return pd.DataFrame(rows)


def write_tables(
    run: Path, results, summary: dict, rows: list[dict], *, group_column: str | None = None
) -> None:
    """``metrics.json``, ``metrics.csv``, ``predictions.csv`` (with ``group_column`` holding
    each row's group, so intervals can be redone by group), ``contributions.csv``,
    ``interactions.csv`` and ``contribution_intervals.csv`` (when computed)."""
    (run / "metrics.json").write_text(json.dumps(summary, indent=2, default=float))
    pd.DataFrame(rows).to_csv(run / "metrics.csv", index=False)
    if group_column in ("row", "fold", "y_true"):
        group_column = f"group_{group_column}"
    _predictions_table(results, group_column).to_csv(run / "predictions.csv", index=False)
    contributions = _contributions_table(results, summary["explained_model"])
    if contributions is not None:
        contributions.to_csv(run / "contributions.csv", index=False)
    interactions = _interactions_table(summary)
    if interactions is not None:
        interactions.to_csv(run / "interactions.csv", index=False)
    if summary.get("contribution_intervals"):
        intervals = pd.DataFrame(summary["contribution_intervals"])
        intervals.insert(0, "strategy", summary["explained_model"])
        intervals.to_csv(run / "contribution_intervals.csv", index=False)


def _chosen_estimator(study, chosen: dict, seed: int):
    """The unfitted estimator and the rows to fit it on, for the model ``chosen``."""
    from toolkit.estimators import MultimodalClassifier, MultimodalRegressor
    from toolkit.fusion import LateFusion

    Estimator = MultimodalRegressor if study.classes is None else MultimodalClassifier
    label = chosen["model"]
    if chosen["kind"] == "auto":
        return Estimator(study.modalities, fusion="auto", random_state=seed), None
    if chosen["kind"] == "fusion":
        fusion = clone(study.fusions[label])
        return Estimator(study.modalities, fusion=fusion, random_state=seed), None
    name = label.removesuffix(" only")
    spec = [m for m in study.modalities if m[0] == name]
    return Estimator(spec, fusion=LateFusion(random_state=seed), random_state=seed), name


def save_chosen_model(run: Path, study, chosen: dict, seed: int, *, available=None):
    """The model ``chosen`` by ``output.model_rule`` refitted on every row (raw labels,
    with the study's groups), saved to ``<run>/model``; returns the fitted model.

    A single-modality model (as the study's baselines) is fitted on the rows that have the
    modality: ``available`` is the study's (n_samples, n_modalities) availability mask.
    """
    from toolkit.persistence import save

    model, single = _chosen_estimator(study, chosen, seed)
    keep = np.ones(len(study.frame), dtype=bool)
    if single is not None and available is not None:
        keep = np.asarray(available)[:, [m[0] for m in study.modalities].index(single)]
    groups = None if study.groups is None else np.asarray(study.groups)[keep]
    model.fit(study.frame.loc[keep], study.y_raw[keep], groups=groups)
    save(model, run / "model")
    return model
