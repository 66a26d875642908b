"""Trust, second wave (issue 25), loading and persistence: a model file (or a study config)
reaches no network whatever it or the environment says, the caller (not the file) bounds
the sizes and worker counts, ``toolkit.save`` removes only what a save made, errors at load
are one line naming the file and the fix, and one loaded model predicts from many threads.

Every network test blocks sockets (``connect``, ``create_connection``, ``getaddrinfo``
record the attempt and fail), unsets ``HF_HUB_OFFLINE`` and points ``TORCH_HOME`` at an
empty folder: the assertion is that no attempt was made and nothing was written there.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import toolkit
from toolkit import (
    AudioEncoder,
    ImageEncoder,
    MultimodalClassifier,
    MultimodalRegressor,
    ScanEncoder,
    TabularEncoder,
    TextEncoder,
)
from toolkit.persistence import ModelFileError, UntrustedTypeError
from toolkit.persistence.files import sha256
from toolkit.study import ConfigError, run_study, validate_config

KERNELS = ["kernels-community/flash-attn2", "attacker-org/evil-kernel", "flash_attention_2"]


# -- helpers --------------------------------------------------------------------------


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Sockets blocked (every attempt recorded), HF_HUB_OFFLINE unset, an empty TORCH_HOME."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args[:2])[:200])
        raise OSError("the network is blocked in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    torch_home = tmp_path / "torch_home"
    torch_home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    return SimpleNamespace(attempts=attempts, torch_home=torch_home)


def _untouched(net) -> None:
    assert net.attempts == [], net.attempts
    assert not any(net.torch_home.rglob("*")), list(net.torch_home.rglob("*"))


def _rewrite_manifest(folder: Path) -> None:
    """Make the manifest's file table match the folder again (as an attacker would)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"] = {
        f.relative_to(folder).as_posix(): {"size": f.stat().st_size, "sha256": sha256(f)}
        for f in sorted(folder.rglob("*"))
        if f.is_file() and f.name != "manifest.json"
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _edit_schema_text(folder: Path, edit) -> None:
    """Rewrite ``schema.json`` inside ``model.skops`` as text."""
    archive = folder / "model.skops"
    with zipfile.ZipFile(archive) as zf:
        files = {name: zf.read(name) for name in zf.namelist()}
    files["schema.json"] = edit(files["schema.json"].decode()).encode()
    with zipfile.ZipFile(archive, "w") as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    _rewrite_manifest(folder)


def _images(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.random((16, 16, 3)) for _ in range(n)]


def _volumes(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.random((8, 8, 8)).astype(np.float32) for _ in range(n)]


def _fit(enc, items) -> tuple:
    """(data, regressor fitted on ``items`` with ``enc`` as modality 'm' and an age)."""
    df = pd.DataFrame({"x": items, "age": np.arange(float(len(items)))})
    mods = [("m", enc, "x"), ("age", TabularEncoder(), ["age"])]
    model = MultimodalRegressor(mods, fusion="early", random_state=0)
    model.fit(df, np.arange(len(items)) % 3 * 1.0)
    return df, model


@pytest.fixture(scope="module")
def torchvision_model(tmp_path_factory):
    """A fitted regressor with a tiny torchvision encoder (random mobilenet weights)."""
    import torch
    import torchvision

    folder = tmp_path_factory.mktemp("tv")
    torch.manual_seed(0)
    net = torchvision.models.get_model("mobilenet_v3_small", weights=None)
    torch.save(net.state_dict(), folder / "w.pt")
    enc = ImageEncoder(
        backend="torchvision", model="mobilenet_v3_small", weights=str(folder / "w.pt"),
        input_size=32, device="cpu",
    )  # fmt: skip
    return _fit(enc, _images())


DENSENET = dict(
    spatial_dims=3, in_channels=1, out_channels=2, init_features=8, growth_rate=4,
    block_config=(2, 2), bn_size=2,
)  # fmt: skip


@pytest.fixture(scope="module")
def densenet_weights(tmp_path_factory):
    import torch
    from monai.networks.nets import DenseNet

    path = tmp_path_factory.mktemp("monai") / "w.pt"
    torch.manual_seed(0)
    torch.save(DenseNet(**DENSENET).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def monai_model(densenet_weights):
    enc = ScanEncoder(
        backend="monai", model="DenseNet", model_kwargs=DENSENET,
        weights=str(densenet_weights), spatial_size=(8, 8, 8), device="cpu",
    )  # fmt: skip
    return _fit(enc, _volumes())


def _save_with(estimator, folder: Path, **attrs) -> Path:
    """``estimator`` saved with ``attrs`` set on its fitted encoder 'm' (restored after), as
    a crafted file would carry them."""
    enc = estimator.encoders_["m"]
    saved = {k: vars(enc).get(k) for k in attrs}
    try:
        for k, v in attrs.items():
            setattr(enc, k, v)
        return toolkit.save(estimator, folder)
    finally:
        for k, v in saved.items():
            setattr(enc, k, v)


# -- 1. a model file reaches no network ------------------------------------------------


def test_torchvision_weights_backbone_in_a_model_file_is_refused_offline(
    torchvision_model, tmp_path, offline
):
    _, model = torchvision_model
    folder = _save_with(
        model, tmp_path / "m", model="fasterrcnn_mobilenet_v3_large_320_fpn",
        model_kwargs={"weights_backbone": "DEFAULT"},
    )  # fmt: skip
    with pytest.raises(UntrustedTypeError, match=r"key 'weights_backbone' .*`weights=`"):
        toolkit.load(folder)
    _untouched(offline)


def test_torchvision_builder_defaults_download_nothing(torchvision_model, tmp_path, offline):
    """The detection builders download an ImageNet backbone unless told not to: without any
    model_kwargs the file's architecture is built offline (then refused: it does not fit
    the weights)."""
    _, model = torchvision_model
    folder = _save_with(model, tmp_path / "m", model="fasterrcnn_mobilenet_v3_large_320_fpn")
    with pytest.raises(ModelFileError, match="do not fit encoder 'm''s network"):
        toolkit.load(folder)
    _untouched(offline)


def test_torchvision_fit_refuses_a_fetching_key_before_building(tmp_path, offline):
    import torch
    import torchvision

    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), tmp_path / "w.pt")
    for kwargs in ({"weights_backbone": "DEFAULT"}, {"pretrained": True}, {"weights": "DEFAULT"}):
        enc = ImageEncoder(
            backend="torchvision", model="fasterrcnn_mobilenet_v3_large_320_fpn",
            model_kwargs=kwargs, weights=str(tmp_path / "w.pt"), device="cpu",
        )  # fmt: skip
        with pytest.raises(ValueError, match=f"key '{next(iter(kwargs))}' would make torchvision"):
            enc.fit(_images(2))
    import torch as _torch

    enc = ImageEncoder(backend="torchvision", model="fasterrcnn_mobilenet_v3_large_320_fpn")
    with _torch.device("meta"):
        enc.build_network()  # the builder's own default backbone is not fetched
    _untouched(offline)


def test_monai_pretrained_url_in_a_model_file_is_refused_offline(monai_model, tmp_path, offline):
    _, model = monai_model
    folder = _save_with(
        model, tmp_path / "m", model="HoVerNet",
        model_kwargs={"pretrained_url": "http://198.51.100.7/hovernet.pth"},
    )  # fmt: skip
    with pytest.raises(UntrustedTypeError, match=r"key 'pretrained_url' .*`weights=`"):
        toolkit.load(folder)
    _untouched(offline)


def test_monai_pretrained_url_naming_a_fifo_does_not_hang(monai_model, tmp_path, offline):
    _, model = monai_model
    fifo = tmp_path / "weights.pth"
    os.mkfifo(fifo)
    folder = _save_with(
        model, tmp_path / "m", model="HoVerNet", model_kwargs={"pretrained_url": fifo.as_uri()}
    )
    outcome = []

    def load():
        try:
            toolkit.load(folder)
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion
            outcome.append(exc)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(timeout=120)
    try:
        assert not worker.is_alive(), "toolkit.load blocked opening a FIFO named by the file"
    finally:
        if worker.is_alive():  # release the reader so the thread ends
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
            worker.join(timeout=30)
    assert outcome and isinstance(outcome[0], UntrustedTypeError), outcome
    assert "pretrained_url" in str(outcome[0])
    _untouched(offline)


def test_monai_networks_that_download_by_default_are_built_offline(offline):
    import torch

    # EfficientNetBN and ResNetFeatures default to pretrained=True (a download)
    enc = ScanEncoder(
        backend="monai", model="EfficientNetBN",
        model_kwargs={"model_name": "efficientnet-b0", "spatial_dims": 2, "in_channels": 3,
                      "num_classes": 2},
    )  # fmt: skip
    with torch.device("meta"):
        enc.build_network()
    # Transchex loads a BERT from the hub whatever its arguments say: never built
    enc = ScanEncoder(backend="monai", model="Transchex", model_kwargs={"in_channels": 1})
    with pytest.raises(ValueError, match="MONAI network 'Transchex' is not built by the toolkit"):
        enc.build_network()
    for kwargs, key in (
        ({"pretrained": True}, "pretrained"),
        ({"backbone": "resnet50"}, "backbone"),
        ({"pretrained_state_dict_key": "x"}, "pretrained_state_dict_key"),
    ):
        enc = ScanEncoder(backend="monai", model="HoVerNet", model_kwargs=kwargs)
        with pytest.raises(ValueError, match=f"key '{key}' would make monai"):
            enc.build_network()
    _untouched(offline)


def _scan_study(tmp_path, model_kwargs) -> dict:
    return {
        "name": "fetch",
        "seed": 0,
        "task": "classification",
        "data": {
            "source": "make_clinical_cohort",
            "params": {"n_samples": 30, "scan_size": 8},
            "target": "diagnosis",
        },
        "modalities": [
            {
                "name": "scan",
                "encoder": "ScanEncoder",
                "columns": "scan",
                "params": {
                    "backend": "monai",
                    "model": "HoVerNet",
                    "weights": str(tmp_path / "w.pt"),
                    "spatial_size": [8, 8, 8],
                    "model_kwargs": model_kwargs,
                },  # fmt: skip
            }
        ],
        "fusion": ["late"],
        "evaluation": {"cv": 2, "bootstrap": 0, "robustness": False, "baselines": False},
        "explanation": {"enabled": False},
        "output": {"report": False, "save_model": False},
    }


def test_a_study_config_with_fetching_model_kwargs_fails_validate_and_run(tmp_path, offline):
    config = _scan_study(tmp_path, {"pretrained_url": "http://198.51.100.7/hovernet.pth"})
    with pytest.raises(
        ConfigError, match=r"modalities\[0\]\.params: model_kwargs: key 'pretrained_url'"
    ):
        validate_config(config)
    out = tmp_path / "runs"
    with pytest.raises(ConfigError, match="pretrained_url"):
        run_study(config, out, progress=False)
    assert not out.exists() or not any(out.iterdir())
    # an architecture the backend would never build is refused at validate too
    config = _scan_study(tmp_path, None)
    config["modalities"][0]["params"]["model"] = "Transchex"
    with pytest.raises(ConfigError, match="'Transchex' is not a model monai lists"):
        validate_config(config)
    _untouched(offline)


def test_model_kwargs_values_must_be_plain_data():
    from toolkit.encoders.backends import IMAGE_BACKENDS

    tv = IMAGE_BACKENDS.get("torchvision")
    tv.check_model_kwargs(
        {"num_classes": 3, "dropout": 0.1, "replace_stride_with_dilation": [False] * 3}
    )
    for kwargs, message in (
        ({"num_classes": object()}, r"\['num_classes'\] holds a builtins.object"),
        ({"dropout": float("nan")}, "expected a finite number"),
        ({"num_classes": 10**40}, "out of range"),
        ({"not an id": 1}, "is not a keyword argument name"),
        ({"norm_layer": None}, "'norm_layer' is not one the toolkit knows to be inert"),
        ({"num_classes": [[[[[[[[1]]]]]]]]}, "nests deeper"),
    ):
        with pytest.raises(ValueError, match=message):
            tv.check_model_kwargs(kwargs)


# -- 1b. transformers folders: no hub kernel, local files only --------------------------


@pytest.fixture(scope="module")
def finetuned_text(tmp_path_factory, tiny_bert):
    """(data, fitted classifier, saved folder) of a text model fine-tuned on the labels."""
    y = np.repeat([0, 1], 12)
    df = pd.DataFrame(
        {"note": [f"the film was {'good' if v else 'bad'} {i}" for i, v in enumerate(y)]}
    )
    enc = TextEncoder(
        backend="transformers", model=str(tiny_bert), device="cpu", fine_tune=True,
        max_epochs=1, trainable_layers=1, random_state=0, batch_size=4,
    )  # fmt: skip
    clf = MultimodalClassifier([("text", enc, "note")], fusion="late", random_state=0).fit(df, y)
    folder = toolkit.save(clf, tmp_path_factory.mktemp("ft") / "model")
    return df, clf, folder


def _with_config(folder: Path, target: Path, edit, file="encoders/text/config.json") -> Path:
    import shutil

    copy = Path(shutil.copytree(folder, target))
    config = json.loads((copy / file).read_text())
    edit(config)
    (copy / file).write_text(json.dumps(config))
    _rewrite_manifest(copy)
    return copy


@pytest.mark.parametrize("key", ["attn_implementation", "_attn_implementation"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_a_hub_attention_kernel_in_config_json_is_refused_offline(
    finetuned_text, tmp_path, offline, key, kernel
):
    _, _, folder = finetuned_text
    copy = _with_config(folder, tmp_path / "m", lambda c: c.update({key: kernel}))
    with pytest.raises(UntrustedTypeError, match=f"sets {key}='{kernel}'.*'sdpa'"):
        toolkit.load(copy)
    _untouched(offline)


def test_built_in_attention_still_loads_offline(finetuned_text, tmp_path, offline):
    df, clf, folder = finetuned_text
    copy = _with_config(folder, tmp_path / "m", lambda c: c.update(attn_implementation="eager"))
    loaded = toolkit.load(copy)
    np.testing.assert_allclose(loaded.predict_proba(df), clf.predict_proba(df), atol=1e-5)
    _untouched(offline)


def test_kernel_settings_elsewhere_in_a_folder_are_refused(finetuned_text, tmp_path, offline):
    _, _, folder = finetuned_text
    cases = [
        (lambda c: c.update(quantization_config={"quant_method": "mxfp4"}), "quantization_config"),
        (
            lambda c: c.update(text_config={"attn_implementation": KERNELS[1]}),
            "attn_implementation",
        ),
        (lambda c: c.update(attn_implementation={"": KERNELS[0]}), "attn_implementation"),
    ]
    for k, (edit, key) in enumerate(cases):
        copy = _with_config(folder, tmp_path / f"m{k}", edit)
        with pytest.raises(UntrustedTypeError, match=f"sets {key}"):
            toolkit.load(copy)
    _untouched(offline)


def test_fit_refuses_a_hub_kernel_in_the_model_folder(tiny_bert, tmp_path, offline):
    import shutil

    folder = Path(shutil.copytree(tiny_bert, tmp_path / "bert"))
    config = json.loads((folder / "config.json").read_text())
    config["attn_implementation"] = KERNELS[0]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=f"attn_implementation='{KERNELS[0]}'"):
        TextEncoder(backend="transformers", model=str(folder), device="cpu").fit(["a b", "c d"])
    _untouched(offline)


def test_a_config_padded_past_the_parse_limit_is_still_checked_at_fit(tiny_bert, tmp_path, offline):
    """A config.json over 16 MiB was skipped as a vocabulary: its kernel setting reached
    the library. Large JSON files are scanned for the keys instead (a vocabulary passes)."""
    import shutil

    from toolkit.encoders.backends import hub

    folder = Path(shutil.copytree(tiny_bert, tmp_path / "bert"))
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "mxfp4"}
    (folder / "config.json").write_text(json.dumps(config) + " " * 600)
    with pytest.raises(ValueError, match=r"too large to check key by key .* \"quantization_"):
        hub.check_hf_files(str(folder), max_file_bytes=500)  # the limit scaled down: fast
    config.pop("quantization_config")
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "vocab_big.json").write_text(json.dumps({f"tok{i}": i for i in range(200)}))
    hub.check_hf_files(str(folder), max_file_bytes=500)  # a large vocabulary without the keys
    _untouched(offline)


def test_sentence_transformers_module_kwargs_cannot_ask_for_a_kernel(tmp_path, offline):
    from toolkit.encoders.backends.sentence_transformers_model import SentenceTransformers

    params = SentenceTransformers().example(tmp_path)
    cfg_file = Path(params["model"]) / "sentence_bert_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["model_kwargs"] = {"attn_implementation": KERNELS[1]}
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="sentence_bert_config.json' sets attn_implementation"):
        TextEncoder(backend="sentence-transformers", **params).fit(["a b", "c d"])
    cfg["model_kwargs"] = {"trust_remote_code": True}
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="asks for custom model code"):
        TextEncoder(backend="sentence-transformers", **params).fit(["a b", "c d"])
    _untouched(offline)


def test_a_sentence_transformers_model_saves_loads_and_predicts_offline(tmp_path, offline):
    """Saving one wrote a model card that looked the base model up on the hub."""
    from toolkit.encoders.backends.sentence_transformers_model import SentenceTransformers

    params = SentenceTransformers().example(tmp_path)
    texts = [f"review {i} was {'good' if i % 2 else 'bad'}" for i in range(12)]
    df, model = _fit(TextEncoder(backend="sentence-transformers", **params), texts)
    folder = toolkit.save(model, tmp_path / "m")
    loaded = toolkit.load(folder)
    np.testing.assert_allclose(loaded.predict(df), model.predict(df), rtol=1e-5, atol=1e-6)
    _untouched(offline)


# -- 2. the caller, not the file, bounds resources --------------------------------------


@pytest.fixture(scope="module")
def scan_stats_model():
    enc = ScanEncoder(spatial_size=(8, 8, 8), grid=2, hist_bins=8)
    return _fit(enc, _volumes())


def test_a_file_cannot_raise_its_own_voxel_limit(scan_stats_model, tmp_path):
    _, model = scan_stats_model
    folder = _save_with(model, tmp_path / "m", spatial_size=[1024] * 3, max_resampled_voxels=2**40)
    with pytest.raises(
        ModelFileError,
        match=r"encoder 'm' \(ScanEncoder\) sets max_resampled_voxels=1099511627776, above "
        r"this caller's limit max_resampled_voxels=33,554,432 voxels.*"
        r"limits=\{'max_resampled_voxels': 1099511627776\}",
    ):
        toolkit.load(folder)
    # the spatial size alone is bounded too
    folder = _save_with(model, tmp_path / "m2", spatial_size=[1024] * 3)
    with pytest.raises(
        ModelFileError, match=r"sets spatial_size=\[1024, 1024, 1024\] \(1,073,741,824 voxels\)"
    ):
        toolkit.load(folder)
    # the caller may raise it (and is then asked for the memory it allowed)
    loaded = toolkit.load(folder, limits={"max_resampled_voxels": 2**30})
    assert list(loaded.encoders_["m"].spatial_size) == [1024] * 3


def test_a_cnn_input_size_from_a_file_is_bounded(tmp_path):
    rng = np.random.default_rng(0)
    imgs = [rng.random((8, 8)) for _ in range(12)]
    enc = ImageEncoder(backend="cnn", widths=(2,), max_epochs=1, random_state=0, device="cpu")
    df = pd.DataFrame({"x": imgs})
    model = MultimodalClassifier([("m", enc, "x")], fusion="early", random_state=0)
    model.fit(df, np.arange(12) % 2)
    folder = _save_with(model, tmp_path / "m", input_size_=30000)
    with pytest.raises(
        ModelFileError,
        match=r"sets input_size_=30000, above this caller's limit max_input_size=1,024",
    ):
        toolkit.load(folder)


def test_a_file_cannot_raise_its_text_length_or_audio_clip_length(tmp_path):
    """TextEncoder.max_chars and a trained audio network's clip length (n_samples_) are
    sizes a file set for itself (1e12 characters; 1e10 samples: 40 GB at predict)."""
    texts = [f"note {i} says {'good' if i % 2 else 'bad'}" for i in range(12)]
    _, text_model = _fit(TextEncoder(n_components=2), texts)
    folder = _save_with(text_model, tmp_path / "t", max_chars=10**12)
    with pytest.raises(ModelFileError, match=r"sets max_chars=1000000000000, above this "
                       r"caller's limit max_chars=100,000 characters"):  # fmt: skip
        toolkit.load(folder)
    t = np.arange(800) / 8000
    clips = [(np.sin(2 * np.pi * (200 + 40 * i) * t).astype(np.float32), 8000) for i in range(12)]
    audio = AudioEncoder(backend="cnn", sample_rate=8000, widths=(2,), max_epochs=1,
                         random_state=0, device="cpu")  # fmt: skip
    _, audio_model = _fit(audio, clips)
    folder = _save_with(audio_model, tmp_path / "a", n_samples_=10**10)
    with pytest.raises(ModelFileError, match=r"sets n_samples_=10000000000 \(40,000,000,000 "
                       r"bytes of float32 samples\), above this caller's limit max_decoded"):  # fmt: skip
        toolkit.load(folder)


def test_worker_counts_from_a_file_are_capped_at_the_callers(scan_stats_model, tmp_path):
    _, model = scan_stats_model
    folder = _save_with(model, tmp_path / "m", n_jobs=48)
    loaded = toolkit.load(folder)
    assert loaded.encoders_["m"].n_jobs == min(48, os.cpu_count())
    assert toolkit.load(folder, limits={"max_n_jobs": 2}).encoders_["m"].n_jobs == 2
    folder = _save_with(model, tmp_path / "m2", n_jobs=-1)
    assert toolkit.load(folder, limits={"max_n_jobs": 1}).encoders_["m"].n_jobs == 1


def test_batch_sizes_and_class_constraints_are_checked_at_load(scan_stats_model, tmp_path):
    _, model = scan_stats_model
    folder = _save_with(model, tmp_path / "m", batch_size=10**7)
    with pytest.raises(
        ModelFileError, match="sets batch_size=10000000, above this caller's limit max_batch_size"
    ):
        toolkit.load(folder)
    folder = _save_with(model, tmp_path / "m2", grid=10**4)  # grid**3 features per volume
    with pytest.raises(
        ModelFileError, match=r"encoder 'm' has a parameter its class refuses \(.*'grid'"
    ):
        toolkit.load(folder)


def test_limits_are_checked_and_match_the_readers_defaults():
    from toolkit.io.audio import MAX_DECODED_BYTES, MAX_SECONDS
    from toolkit.io.image import MAX_PIXELS
    from toolkit.io.scan import MAX_RESAMPLED_VOXELS, MAX_VOXELS
    from toolkit.persistence.limits import LOAD_LIMITS, resolve_limits

    assert LOAD_LIMITS["max_voxels"] == MAX_VOXELS
    assert LOAD_LIMITS["max_resampled_voxels"] == MAX_RESAMPLED_VOXELS
    assert LOAD_LIMITS["max_pixels"] == MAX_PIXELS
    assert LOAD_LIMITS["max_seconds"] == MAX_SECONDS
    assert LOAD_LIMITS["max_decoded_bytes"] == MAX_DECODED_BYTES
    assert resolve_limits(None)["max_n_jobs"] == os.cpu_count()
    with pytest.raises(TypeError, match="unknown limits"):
        resolve_limits({"max_voxel": 1})
    with pytest.raises(ValueError, match="must be a positive number"):
        resolve_limits({"max_voxels": -1})


# -- 3. saving removes only what a save made --------------------------------------------


def test_save_keeps_a_user_folder_that_merely_looks_like_its_temporary_folder(
    scan_stats_model, tmp_path
):
    from toolkit.persistence.saving import _host_tag

    marker = ".toolkit-save-in-progress"  # what a save writes first into its own folder
    _, model = scan_stats_model
    lookalike = tmp_path / f".m.saving-{_host_tag()}-999999-{'a' * 32}"  # a dead pid
    lookalike.mkdir()
    (lookalike / "notes.txt").write_text("my notes")
    (lookalike / "results.json").write_text("{}")
    replaced = tmp_path / f".m.replaced-{_host_tag()}-999999-{'b' * 32}"
    replaced.mkdir()
    (replaced / "manifest.json").write_text('{"format": 2}')
    killed = tmp_path / f".m.saving-{_host_tag()}-999999-{'c' * 32}"  # a killed save's
    killed.mkdir()
    (killed / marker).write_text("c" * 32)
    (killed / "model.skops").write_bytes(b"partial")
    forged = tmp_path / f".m.saving-{_host_tag()}-999999-{'d' * 32}"
    forged.mkdir()
    (forged / marker).write_text("another token")
    (forged / "data.json").write_text("{}")

    folder = toolkit.save(model, tmp_path / "m")
    assert (lookalike / "notes.txt").read_text() == "my notes"
    assert (replaced / "manifest.json").exists() and (forged / "data.json").exists()
    assert not killed.exists()
    assert not (folder / marker).exists()
    toolkit.save(model, folder, overwrite=True)
    assert (lookalike / "results.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".m.")) == sorted(
        [lookalike.name, replaced.name, forged.name]
    )
    from toolkit.persistence.saving import _SAVE_MARKER

    assert _SAVE_MARKER == marker


# -- 4. clear errors ------------------------------------------------------------------


def test_save_of_an_unsupported_fitted_object_says_so():
    from sklearn.linear_model import LogisticRegression

    fitted = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    message = (
        r"toolkit.save does not support sklearn.linear_model._logistic.LogisticRegression "
        r"objects; it saves fitted MultimodalClassifier and MultimodalRegressor models"
    )
    with pytest.raises(TypeError, match=message):
        toolkit.save(fitted, "never-written")
    with pytest.raises(TypeError, match="does not support toolkit.encoders.text.TextEncoder"):
        toolkit.save(
            TextEncoder(n_components=2).fit(["good film", "bad film", "great acting"]),
            "never-written",
        )
    assert not Path("never-written").exists()


@pytest.fixture
def plain_folder(scan_stats_model, tmp_path):
    return toolkit.save(scan_stats_model[1], tmp_path / "m")


def test_an_integer_of_too_many_digits_is_a_one_line_model_file_error(plain_folder):
    manifest = json.loads((plain_folder / "manifest.json").read_text())
    text = json.dumps(manifest).replace('"format": 2', '"format": ' + "9" * 5000)
    (plain_folder / "manifest.json").write_text(text)
    with pytest.raises(ModelFileError, match=r"manifest.json' is not valid JSON .*4300"):
        toolkit.load(plain_folder)
    manifest["format"] = 2
    (plain_folder / "manifest.json").write_text(json.dumps(manifest))
    _edit_schema_text(
        plain_folder,
        lambda s: s.replace('"protocol": ', '"x": ' + "9" * 5000 + ', "protocol": ', 1),
    )
    with pytest.raises(
        ModelFileError, match=r"model.skops' is not a readable skops archive .*digits"
    ):
        toolkit.load(plain_folder)


def test_an_integer_of_too_many_digits_in_a_transformers_config(finetuned_text, tmp_path):
    _, _, folder = finetuned_text
    copy = _with_config(folder, tmp_path / "m", lambda c: None)
    config = copy / "encoders/text/config.json"
    config.write_text(config.read_text().replace("{", '{"big": ' + "7" * 5000 + ", ", 1))
    _rewrite_manifest(copy)
    with pytest.raises(ModelFileError, match=r"'config.json' is not valid JSON"):
        toolkit.load(copy)


@pytest.mark.parametrize(
    ("raised", "kind", "message"),
    [
        (
            MemoryError(),
            ModelFileError,
            r"needs more memory than this machine has .*load it on a larger machine",
        ),
        (
            TypeError("unhashable type: 'list'"),
            ModelFileError,
            r"could not be loaded \(TypeError: unhashable type: 'list'\); the file is corrupt",
        ),
        (
            PermissionError(13, "Permission denied", "/x/model.skops"),
            PermissionError,
            r"could not be read: Permission denied '/x/model.skops' .*check that the folder",
        ),
        (
            OSError(36, "File name too long", "/x/" + "a" * 300),
            OSError,
            r"could not be read: File name too long",
        ),
    ],
)
def test_low_level_errors_at_load_are_one_line_naming_the_model(
    plain_folder, monkeypatch, raised, kind, message
):
    """A library or the system failing in the middle of a load (simulated in the checks of
    the built estimator) gives one line naming the model and what to do."""
    from toolkit.persistence import loading

    def fail(*args, **kwargs):
        raise raised

    monkeypatch.setattr(loading, "_check_plain_data", fail)
    with pytest.raises(kind, match=message) as info:
        toolkit.load(plain_folder)
    text = str(info.value)
    assert f"model '{plain_folder}'" in text and "\n" not in text
    assert info.value.__cause__ is raised


def test_a_folder_without_a_manifest_is_still_named_as_such(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="is not a saved toolkit model"):
        toolkit.load(tmp_path / "m")


# -- thread-safe predict ----------------------------------------------------------------


def test_concurrent_predict_proba_on_one_loaded_fine_tuned_text_model(finetuned_text):
    df, _, folder = finetuned_text
    model = toolkit.load(folder)
    expected = model.predict_proba(df)
    errors, wrong = [], []

    def work(k):
        for i in range(15):
            start = (k * 7 + i) % 10
            try:
                out = model.predict_proba(df.iloc[start:])
            except Exception as exc:  # noqa: BLE001 - recorded for the assertion
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
                continue
            if not np.allclose(out, expected[start:], atol=1e-6):
                wrong.append(start)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and wrong == [], (errors[:3], wrong[:3])
    # the per-instance lock lives beside the encoder: the model still saves and clones
    toolkit.save(model, folder.parent / "again")
    from sklearn.base import clone

    clone(model.encoders_["text"])


@pytest.mark.parametrize("backend", ["transformers", "sentence-transformers", "audio"])
def test_a_hub_id_makes_no_connection_at_fit(offline, backend):
    """A hub id (not in the cache here) is refused at fit without a connection attempt:
    ``local_files_only=True`` alone let huggingface_hub fetch its agent registry from the
    hub while building the request headers."""
    from toolkit import AudioEncoder, TextEncoder

    if backend == "audio":
        encoder, items = AudioEncoder(backend="transformers", model="someorg/not-cached"), None
    else:
        encoder, items = TextEncoder(backend=backend, model="someorg/not-cached"), ["a b", "c d"]
    with pytest.raises(OSError, match="not-cached"):
        encoder.fit(items) if items else encoder.fit([(np.zeros(800, np.float32), 8000)] * 2)
    assert offline.attempts == [], offline.attempts
    import huggingface_hub.constants as hf_constants

    assert hf_constants.HF_HUB_OFFLINE is False  # the caller's setting is restored


def test_a_weights_url_is_named_as_a_url_never_fetched(offline):
    """It was reported as a missing file with the URL mangled ('https:/download...')."""
    from toolkit.encoders._torch import load_state_dict

    with pytest.raises(ValueError, match=r"weights='https://example.org/w.pth' is a URL; weights "
                       "are never downloaded"):  # fmt: skip
        load_state_dict("https://example.org/w.pth")
    _untouched(offline)
