"""toolkit.save / toolkit.load: round trips, and a model folder that cannot run code, escape
its folder, exhaust the machine or destroy data (issue: trust).

Hostile folders are crafted here the way an attacker would: the skops schema is edited to add
nodes, and the manifest's file table is updated to match, so only the real defences stop them.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import toolkit
from toolkit import (
    GatedFusion,
    ImageEncoder,
    MultimodalClassifier,
    MultimodalRegressor,
    TabularEncoder,
    TextEncoder,
)
from toolkit.persistence import ModelFileError, UntrustedTypeError


def _data(n=80, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    df = pd.DataFrame(
        {
            "note": [f"felt {w} today" for w in np.array(["great", "awful"])[y]],
            "img": [np.clip(rng.random((8, 8)) * 0.5 + 0.3 * c, 0, 1) for c in y],
            "age": rng.normal(50, 10, n),
        }
    )
    mods = [
        ("text", TextEncoder(n_components=4), "note"),
        ("image", ImageEncoder(pixel_size=4), "img"),
        ("age", TabularEncoder(), ["age"]),
    ]
    return df, np.array(["neg", "pos"])[y], mods


@pytest.fixture(scope="module")
def fitted():
    df, y, mods = _data()
    return df, MultimodalClassifier(mods, fusion="early", random_state=0).fit(df, y)


@pytest.fixture(scope="module")
def gated_folder(tmp_path_factory):
    df, y, mods = _data()
    clf = MultimodalClassifier(mods, fusion=GatedFusion(max_epochs=5), random_state=0).fit(df, y)
    return toolkit.save(clf, tmp_path_factory.mktemp("gated") / "model")


@pytest.fixture(scope="module")
def late_fitted():
    """The late-fusion model on the same data as ``fitted`` (early fusion)."""
    df, y, mods = _data()
    return MultimodalClassifier(mods, fusion="late", random_state=0).fit(df, y)


@pytest.fixture
def folder(fitted, tmp_path):
    return toolkit.save(fitted[1], tmp_path / "model")


def _rewrite_manifest(folder: Path, edit=None) -> None:
    """Edit the manifest, then make its file table match the folder (as an attacker would)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    if edit is not None:
        edit(manifest)
    files = {}
    for f in sorted(folder.rglob("*")):
        rel = f.relative_to(folder).as_posix()
        if f.is_file() and not f.is_symlink() and rel != "manifest.json":
            files[rel] = {
                "size": f.stat().st_size,
                "sha256": hashlib.sha256(f.read_bytes()).hexdigest(),
            }
    manifest["files"] = files
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _edit_schema(folder: Path, edit) -> None:
    archive = folder / "model.skops"
    with zipfile.ZipFile(archive) as zf:
        files = {name: zf.read(name) for name in zf.namelist()}
    schema = json.loads(files["schema.json"])
    edit(schema)
    files["schema.json"] = json.dumps(schema).encode()
    with zipfile.ZipFile(archive, "w") as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    _rewrite_manifest(folder)


def _add_attr(schema, name, node):
    """Add ``name: node`` to the estimator's attribute dict inside a skops schema."""
    attrs = schema["content"]
    attrs["content"][name] = node
    attrs["key_types"]["content"].append(
        {"__class__": "str", "__module__": "builtins", "__loader__": "TypeNode"}
    )


def _nodes(schema, cls: str):
    """Every skops node of class ``cls`` in a schema, with its attribute dict (or {})."""
    found, stack = [], [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            content = node.get("content")
            attrs = content.get("content", {}) if isinstance(content, dict) else {}
            if node.get("__class__") == cls:
                found.append(attrs)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


# -- round trips ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "fusion", ["early", "late", GatedFusion(max_epochs=20)], ids=["early", "late", "gated"]
)
def test_round_trip_gives_identical_predictions_and_explanations(tmp_path, fusion):
    df, y, mods = _data()
    clf = MultimodalClassifier(mods, fusion=fusion, random_state=0).fit(df, y)
    toolkit.save(clf, tmp_path / "model")
    loaded = toolkit.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.predict_proba(df), clf.predict_proba(df))
    assert list(loaded.classes_) == ["neg", "pos"]
    np.testing.assert_array_equal(loaded.explain(df).values, clf.explain(df).values)


def test_regressor_and_pretrained_encoder_round_trip(tmp_path, tiny_bert):
    df, y, _ = _data()
    target = (y == "pos") * 2.0
    mods = [
        ("text", TextEncoder(backend="transformers", model=str(tiny_bert), device="cpu"), "note")
    ]
    reg = MultimodalRegressor(mods, fusion="late", random_state=0).fit(df, target)
    folder = toolkit.save(reg, tmp_path / "reg")
    assert (folder / "encoders" / "text" / "model.safetensors").exists()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["encoders"]["text"] == {"folder": "encoders/text", "params": {"model": "."}}
    assert "encoders/text/model.safetensors" in manifest["tensors"]
    loaded = toolkit.load(folder)
    np.testing.assert_allclose(loaded.predict(df), reg.predict(df), atol=1e-10)

    # a modality's name becomes a folder: one that would leave the model folder is refused
    for bad in ("../up", "a/b", ".."):
        odd = MultimodalRegressor([(bad, mods[0][1], "note")], fusion="early").fit(df, target)
        with pytest.raises(ValueError, match="cannot name a folder of the saved model"):
            toolkit.save(odd, tmp_path / "odd" / "m")
    assert not (tmp_path / "up").exists() and not (tmp_path / "odd" / "m").exists()

    # the saved transformer's config may not ask for custom code
    config = json.loads((folder / "encoders/text/config.json").read_text())
    original = json.loads(json.dumps(config))
    config["auto_map"] = {"AutoModel": "evil.EvilModel"}
    (folder / "encoders/text/config.json").write_text(json.dumps(config))
    _rewrite_manifest(folder)
    with pytest.raises(UntrustedTypeError, match="'config.json' asks for custom model code"):
        toolkit.load(folder)

    # nor describe a network far larger than its weights (checked on the meta device)
    del config["auto_map"]
    config["vocab_size"] = 10**8
    (folder / "encoders/text/config.json").write_text(json.dumps(config))
    _rewrite_manifest(folder)
    with pytest.raises(ModelFileError, match="config.json describes a network of"):
        toolkit.load(folder)
    config["model_type"] = "no-such-model"
    (folder / "encoders/text/config.json").write_text(json.dumps(config))
    _rewrite_manifest(folder)
    with pytest.raises(ModelFileError, match="does not describe a model transformers can build"):
        toolkit.load(folder)

    # trust_remote_code alone is named as what the file asks for
    config = json.loads(json.dumps(original))
    config["trust_remote_code"] = True
    (folder / "encoders/text/config.json").write_text(json.dumps(config))
    _rewrite_manifest(folder)
    with pytest.raises(UntrustedTypeError, match=r"custom model code \(trust_remote_code\)"):
        toolkit.load(folder)

    # a config that no longer matches the weights (one layer more or less, another model
    # type) would leave tensors initialized at random: refused, not loaded with a log line
    for change in ({"num_hidden_layers": original["num_hidden_layers"] + 1},
                   {"num_hidden_layers": original["num_hidden_layers"] - 1},
                   {"model_type": "gpt2"}):  # fmt: skip
        config = {**original, **change}
        (folder / "encoders/text/config.json").write_text(json.dumps(config))
        _rewrite_manifest(folder)
        with pytest.raises(ModelFileError, match="does not match the network its config.json"):
            toolkit.load(folder)


def test_manifest_lists_every_file_with_size_hash_and_tensors(gated_folder):
    manifest = json.loads((gated_folder / "manifest.json").read_text())
    assert manifest["format"] == 2
    assert set(manifest["files"]) == {"model.skops", "fusion.safetensors"}
    info = manifest["files"]["fusion.safetensors"]
    data = (gated_folder / "fusion.safetensors").read_bytes()
    assert info == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    tensors = manifest["tensors"]["fusion.safetensors"]
    assert tensors["head.1.weight"]["dtype"] == "F64"
    assert tensors["head.1.weight"]["shape"][1] == 32  # GatedFusion's default hidden size
    assert all(t["dtype"] == "F64" for t in tensors.values())


# -- 1. loading runs no code it did not choose ---------------------------------------------


def test_allow_list_holds_exact_canonical_names_only():
    import importlib

    names = toolkit.persistence.trusted_types()
    assert "toolkit.estimators.MultimodalClassifier" in names
    assert not any(n.endswith("*") or n.endswith(".") for n in names)
    for name in toolkit.persistence.toolkit_types() | {"numpy.ndarray", "builtins.dict"}:
        module, _, attr = name.rpartition(".")
        obj = getattr(importlib.import_module(module), attr)
        assert f"{obj.__module__}.{obj.__qualname__}" == name
    # names reached through an attribute of a toolkit module are not on the list
    for name in (
        "toolkit.persistence.saving.shutil",
        "toolkit.cli.os",
        "toolkit.datasets.mmsa.pickle",
    ):
        assert name not in names


def test_every_class_save_writes_is_on_the_allow_list(tmp_path):
    from toolkit import AudioEncoder, FeatureEncoder, ScanEncoder

    df, y, mods = _data(40)
    rng = np.random.default_rng(1)
    df["seq"] = [np.ones((3, 2)) * i for i in range(len(df))]
    df["wave"] = [(rng.normal(0, 0.1, 2000).astype(np.float32), 8000) for _ in range(len(df))]
    df["vol"] = [rng.random((6, 6, 6)).astype(np.float32) for _ in range(len(df))]
    mods = mods + [
        ("seq", FeatureEncoder(), "seq"),
        ("audio", AudioEncoder(sample_rate=8000), "wave"),
        ("scan", ScanEncoder(spatial_size=(6, 6, 6)), "vol"),
    ]
    seen, count = set(), 0
    for est, target in ((MultimodalClassifier, y), (MultimodalRegressor, (y == "pos") * 1.0)):
        for fusion in ("early", "late", GatedFusion(max_epochs=2)):
            model = est(mods, fusion=fusion, random_state=0).fit(df, target)
            count += 1
            folder = toolkit.save(model, tmp_path / f"m{count}")
            with zipfile.ZipFile(folder / "model.skops") as zf:
                schema = json.loads(zf.read("schema.json"))
            seen |= {n for _, n in toolkit.persistence.allowlist._schema_names(schema, "x")}
            toolkit.load(folder)
    from toolkit.fusion import AttentionFusion, AutoFusion, LowRankFusion, TensorFusion

    small, ys, base = _data(40)
    for fusion in (
        AttentionFusion(max_epochs=2),
        TensorFusion(max_epochs=2),
        LowRankFusion(max_epochs=2),
        AutoFusion(candidates=["early"], cv=2),
    ):
        model = MultimodalClassifier(base, fusion=fusion, random_state=0).fit(small, ys)
        count += 1
        folder = toolkit.save(model, tmp_path / f"m{count}")
        with zipfile.ZipFile(folder / "model.skops") as zf:
            schema = json.loads(zf.read("schema.json"))
        seen |= {n for _, n in toolkit.persistence.allowlist._schema_names(schema, "x")}
        toolkit.load(folder)
    assert seen <= toolkit.persistence.trusted_types()
    assert {n for n in seen if n.startswith("toolkit.")} == toolkit.persistence.toolkit_types()


@pytest.mark.parametrize(
    ("loader", "module", "cls"),
    [
        ("ObjectNode", "os", "system"),
        ("ObjectNode", "toolkit.persistence.saving", "shutil"),
        ("TypeNode", "toolkit.cli", "os"),
        ("FunctionNode", "toolkit.datasets.mmsa", "pickle"),
        ("FunctionNode", "os", "system"),
        ("ConstructorFromReduceNode", "toolkit.persistence.saving", "_step"),
    ],
)
def test_nodes_naming_other_code_are_refused_by_name(folder, loader, module, cls):
    def add(schema):
        node = {"__class__": cls, "__module__": module, "__loader__": loader}
        if loader == "ConstructorFromReduceNode":
            node["content"] = {
                "__class__": "tuple",
                "__module__": "builtins",
                "__loader__": "TupleNode",
                "content": [],
            }
        _add_attr(schema, "evil_", node)

    _edit_schema(folder, add)
    with pytest.raises(UntrustedTypeError, match=rf"not trusted: \['{module}\.{cls}'\]"):
        toolkit.load(folder)


def test_a_hostile_node_runs_nothing(folder, monkeypatch, tmp_path):
    """A callable planted under a toolkit module path is refused before anything is built."""
    import toolkit.cli

    ran = []
    monkeypatch.setattr(toolkit.cli, "planted", lambda *a: ran.append(a), raising=False)

    def add(schema):
        node = {
            "__class__": "planted",
            "__module__": "toolkit.cli",
            "__loader__": "ConstructorFromReduceNode",
            "content": {
                "__class__": "tuple",
                "__module__": "builtins",
                "__loader__": "TupleNode",
                "content": [
                    {
                        "__class__": "str",
                        "__module__": "builtins",
                        "__loader__": "JsonNode",
                        "content": '"x"',
                        "is_json": True,
                    }
                ],
            },
        }
        _add_attr(schema, "evil_", node)

    _edit_schema(folder, add)
    with pytest.raises(UntrustedTypeError, match=r"toolkit\.cli\.planted"):
        toolkit.load(folder)
    assert ran == []
    # the caller can still choose to trust it, by exact name
    toolkit.load(folder, trusted=["toolkit.cli.planted"])
    assert ran == [("x",)]


def test_partial_and_methods_and_unknown_node_kinds_are_refused(folder):
    def partial(schema):
        node = {"__class__": "partial", "__module__": "functools", "__loader__": "PartialNode"}
        _add_attr(schema, "evil_", node)

    _edit_schema(folder, partial)
    with pytest.raises(UntrustedTypeError, match=r"functools\.partial"):
        toolkit.load(folder)

    def unknown(schema):
        schema["content"]["content"]["evil_"]["__loader__"] = "ExecNode"

    _edit_schema(folder, unknown)
    with pytest.raises(UntrustedTypeError, match="unknown skops node kind 'ExecNode'"):
        toolkit.load(folder)


def test_trusted_must_be_exact_names(folder):
    with pytest.raises(TypeError, match="exact dotted names"):
        toolkit.load(folder, trusted="os.system")
    with pytest.raises(TypeError, match="exact dotted names"):
        toolkit.load(folder, trusted=["toolkit.*"])


def test_symlinks_are_refused(folder, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(folder, target_is_directory=True)
    with pytest.raises(ModelFileError, match="is a symbolic link"):
        toolkit.load(link)

    real = tmp_path / "elsewhere.skops"
    shutil.move(folder / "model.skops", real)
    (folder / "model.skops").symlink_to(real)
    with pytest.raises(ModelFileError, match="holds a symbolic link 'model.skops'"):
        toolkit.load(folder)
    (folder / "model.skops").unlink()
    shutil.move(real, folder / "model.skops")

    (folder / "encoders").mkdir()
    (folder / "encoders" / "passwd.txt").symlink_to("/etc/passwd")
    with pytest.raises(ModelFileError, match="symbolic link 'encoders/passwd.txt'"):
        toolkit.load(folder)


def test_fifo_in_a_model_folder_is_refused_without_opening_it(folder):
    os.mkfifo(folder / "pipe.json")
    with pytest.raises(ModelFileError, match="'pipe.json', which is not a regular file"):
        toolkit.load(folder)


def test_files_the_manifest_does_not_list_or_code_files_are_refused(folder):
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ModelFileError, match=r"does not list: \['pytorch_model.bin'\]"):
        toolkit.load(folder)
    _rewrite_manifest(folder)  # listed now: still not plain data
    with pytest.raises(ModelFileError, match=r"not plain data: \['pytorch_model.bin'\]"):
        toolkit.load(folder)
    (folder / "pytorch_model.bin").unlink()
    _rewrite_manifest(folder)
    toolkit.load(folder)


def test_changed_file_is_detected_by_size_and_hash(folder):
    data = bytearray((folder / "model.skops").read_bytes())
    data[100] ^= 0xFF
    (folder / "model.skops").write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="does not match the SHA-256"):
        toolkit.load(folder)
    (folder / "model.skops").write_bytes(bytes(data[:-10]))
    with pytest.raises(ModelFileError, match="the file was changed or truncated"):
        toolkit.load(folder)


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory, tiny_bert):
    df, y, _ = _data(40)
    enc = TextEncoder(backend="transformers", model=str(tiny_bert), device="cpu")
    reg = MultimodalRegressor([("text", enc, "note")], fusion="early", random_state=0)
    reg.fit(df, (y == "pos") * 1.0)
    return toolkit.save(reg, tmp_path_factory.mktemp("bert") / "model")


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m["encoders"]["text"].update(folder="/etc"),
        lambda m: m["encoders"]["text"].update(folder="encoders/../.."),
        lambda m: m["encoders"]["text"].update(params={"model": "../../.."}),
        lambda m: m["encoders"]["text"].update(params={"model": "~"}),
        lambda m: m["files"].update({"../x.json": {"size": 1}}),
    ],
    ids=["absolute-folder", "dotdot-folder", "dotdot-param", "home", "files"],
)
def test_manifest_paths_stay_inside_the_folder(bert_folder, tmp_path, edit):
    folder = Path(shutil.copytree(bert_folder, tmp_path / "m"))
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="leaves the model folder"):
        toolkit.load(folder)


def test_pretrained_encoders_must_be_restored_from_the_folder(bert_folder, tmp_path):
    """Without its manifest entry a pretrained encoder would load from the location the file
    names (outside the folder) at predict time: refused at load."""
    folder = Path(shutil.copytree(bert_folder, tmp_path / "m"))
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = manifest["encoders"].pop("text")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="uses a pretrained network that the folder"):
        toolkit.load(folder)
    manifest["encoders"]["text"] = {**entry, "params": {"weights": "model.safetensors"}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match=r"restored from \['model'\] only"):
        toolkit.load(folder)


def test_hf_checks_apply_to_the_folder_the_model_is_loaded_from(bert_folder, tmp_path):
    """Moving the network into a subfolder must not skip the custom-code and size checks."""
    folder = Path(shutil.copytree(bert_folder, tmp_path / "m"))
    enc_dir = folder / "encoders" / "text"
    (enc_dir / "sub").mkdir()
    for f in list(enc_dir.iterdir()):
        if f.is_file():
            shutil.move(f, enc_dir / "sub" / f.name)
    config = json.loads((enc_dir / "sub" / "config.json").read_text())
    config["intermediate_size"] = 10**8
    (enc_dir / "sub" / "config.json").write_text(json.dumps(config))

    def point_at_sub(m):
        m["encoders"]["text"]["params"] = {"model": "sub"}
        m["tensors"] = {k.replace("text/", "text/sub/"): v for k, v in m["tensors"].items()}

    _rewrite_manifest(folder, point_at_sub)
    with pytest.raises(ModelFileError, match="config.json describes a network of"):
        toolkit.load(folder)


def test_a_file_that_sets_memory_or_a_text_pattern_is_refused(folder, tmp_path):
    def memory(schema):
        schema["content"]["content"]["memory"] = {
            "__class__": "str",
            "__module__": "builtins",
            "__loader__": "JsonNode",
            "content": json.dumps(str(tmp_path / "elsewhere")),
            "is_json": True,
        }

    saved = (folder / "model.skops").read_bytes(), (folder / "manifest.json").read_text()
    _edit_schema(folder, memory)
    with pytest.raises(UntrustedTypeError, match="saved models carry no cache"):
        toolkit.load(folder)
    assert not (tmp_path / "elsewhere").exists()

    (folder / "model.skops").write_bytes(saved[0])
    (folder / "manifest.json").write_text(saved[1])

    def pattern(schema):
        found = _nodes(schema, "TfidfVectorizer")
        assert found
        for n, attrs in enumerate(found):
            for key, value in (("token_pattern", r"(?u)(\w|\w)*\b$"), ("input", "filename")):
                attrs[key].update(content=json.dumps(value), __id__=10 + 2 * n + (key == "input"))

    _edit_schema(folder, pattern)
    with pytest.raises(UntrustedTypeError, match="settings the toolkit never writes.*input"):
        toolkit.load(folder)


def test_manifest_cannot_set_other_encoder_parameters(folder, bert_folder, tmp_path):
    # an encoder without a pretrained network takes no saved files
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["encoders"] = {"text": {"folder": "encoders/text", "params": {"model": "."}}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="to encoder 'text', which loads none"):
        toolkit.load(folder)
    # a pretrained one takes only the parameter that names its files
    bert = Path(shutil.copytree(bert_folder, tmp_path / "m"))
    manifest = json.loads((bert / "manifest.json").read_text())
    manifest["encoders"]["text"]["params"] = {"model": ".", "backend": "tfidf"}
    (bert / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match=r"sets parameters \['backend', 'model'\]"):
        toolkit.load(bert)


def _rewrite_safetensors(file: Path, tensors: dict) -> None:
    from safetensors.numpy import save_file

    save_file(tensors, str(file))


def test_weights_of_another_dtype_or_shape_are_refused(gated_folder, tmp_path):
    from safetensors.numpy import load_file

    folder = Path(shutil.copytree(gated_folder, tmp_path / "m"))
    original = load_file(str(folder / "fusion.safetensors"))

    # float32 weights, manifest updated to match: the architecture check refuses them
    _rewrite_safetensors(
        folder / "fusion.safetensors", {k: v.astype(np.float32) for k, v in original.items()}
    )

    def retable(m):
        m["tensors"]["fusion.safetensors"] = toolkit.persistence.safetensors_header(
            folder / "fusion.safetensors"
        )

    _rewrite_manifest(folder, retable)
    with pytest.raises(ModelFileError, match="do not fit the fusion's network"):
        toolkit.load(folder)

    # a wider head than the model describes
    bigger = dict(original)
    bigger["head.1.weight"] = np.zeros((7, original["head.1.weight"].shape[1]))
    _rewrite_safetensors(folder / "fusion.safetensors", bigger)
    _rewrite_manifest(folder, retable)
    with pytest.raises(ModelFileError, match="do not fit the fusion's network"):
        toolkit.load(folder)

    # file and manifest disagree
    _rewrite_safetensors(folder / "fusion.safetensors", original)
    _rewrite_manifest(folder)  # sizes/hashes updated, tensor table still the float32 one
    with pytest.raises(ModelFileError, match="do not match the manifest"):
        toolkit.load(folder)


def test_safetensors_header_is_bounded_before_decoding(gated_folder, tmp_path):
    folder = Path(shutil.copytree(gated_folder, tmp_path / "m"))
    file = folder / "fusion.safetensors"
    data = file.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    cases = {
        "huge header length": struct.pack("<Q", 1 << 60) + data[8:],
        "garbage header": data[:8] + b"\xff" * n + data[8 + n :],
        "truncated data": data[:-16],
    }
    for content in cases.values():
        file.write_bytes(content)
        _rewrite_manifest(folder)
        with pytest.raises(ModelFileError, match="corrupt|truncated"):
            toolkit.load(folder)


def test_corrupt_archive_and_manifest_name_the_file(folder):
    (folder / "model.skops").write_bytes(b"PK\x03\x04 not really a zip")
    _rewrite_manifest(folder)
    with pytest.raises(ModelFileError, match=r"model\.skops' is not a readable skops archive"):
        toolkit.load(folder)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(ModelFileError, match=r"manifest\.json' is not valid JSON"):
        toolkit.load(folder)
    (folder / "manifest.json").write_text('["a list"]')
    with pytest.raises(ModelFileError, match="is not a JSON object"):
        toolkit.load(folder)


def test_sizes_are_bounded(folder):
    with pytest.raises(ModelFileError, match="above the max_bytes=1,000 limit"):
        toolkit.load(folder, max_bytes=1000)
    deep = {"__class__": "list", "__module__": "builtins", "__loader__": "ListNode", "content": []}
    node = deep
    for _ in range(300):
        child = {
            "__class__": "list",
            "__module__": "builtins",
            "__loader__": "ListNode",
            "content": [],
        }
        node["content"].append(child)
        node = child
    _edit_schema(folder, lambda s: _add_attr(s, "deep_", deep))
    with pytest.raises(ModelFileError, match="nests deeper than 200"):
        toolkit.load(folder)


def test_architecture_names_must_be_public_models():
    enc = ImageEncoder(backend="torchvision", model="resnet18")
    assert enc.expected_weights()["fc.weight"] == {"dtype": "F32", "shape": [1000, 512]}
    for name in ("_api", "os", "get_model"):
        enc.model = name
        with pytest.raises(ValueError, match=f"architecture '{name}' is not a model torchvision"):
            enc.expected_weights()


def test_gated_weights_stay_inside_and_must_be_present(gated_folder, tmp_path):
    for edit, message in [
        (lambda m: m["fusion"].update(params={"weights": "../outside.safetensors"}), "leaves"),
        (lambda m: m["fusion"].update(folder=".."), "leaves the model folder"),
        (lambda m: m.update(fusion=None), "the fusion uses a pretrained network that the"),
    ]:
        folder = Path(shutil.copytree(gated_folder, tmp_path / f"m{len(message)}"))
        manifest = json.loads((folder / "manifest.json").read_text())
        edit(manifest)
        (folder / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ModelFileError, match=message):
            toolkit.load(folder)


def test_sentence_modules_must_be_known(tmp_path):
    from toolkit.persistence.loading import _check_hf_folder

    (tmp_path / "modules.json").write_text(
        json.dumps([{"idx": 0, "name": "0", "path": "", "type": "os.system"}])
    )
    with pytest.raises(UntrustedTypeError, match=r"untrusted modules \['os.system'\]"):
        _check_hf_folder(tmp_path, "text", tmp_path, 1 << 30)
    (tmp_path / "modules.json").write_text(
        json.dumps(
            [
                {
                    "idx": 0,
                    "name": "0",
                    "path": "../x",
                    "type": "sentence_transformers.models.Pooling",
                }
            ]
        )
    )
    with pytest.raises(ModelFileError, match="leaves the model folder"):
        _check_hf_folder(tmp_path, "text", tmp_path, 1 << 30)


def test_other_version_is_refused(folder):
    def newer(m):
        m["versions"]["multimodal-toolkit"] = "9.3.0"

    _rewrite_manifest(folder, newer)
    with pytest.raises(ValueError, match="saved by multimodal-toolkit 9.3.0"):
        toolkit.load(folder)
    _rewrite_manifest(folder, lambda m: m.update(format=99))
    with pytest.raises(ValueError, match="save format 99"):
        toolkit.load(folder)


def test_not_a_model_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a saved toolkit model"):
        toolkit.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="is not a saved toolkit model"):
        toolkit.load(tmp_path / "absent")


# -- 2. saving never destroys what it did not write ------------------------------------------


def test_existing_folder_is_not_overwritten(fitted, tmp_path):
    clf = fitted[1]
    toolkit.save(clf, tmp_path / "m")
    with pytest.raises(FileExistsError, match="exists; pass overwrite=True"):
        toolkit.save(clf, tmp_path / "m")
    toolkit.save(clf, tmp_path / "m", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary folder left


def test_overwrite_refuses_a_folder_of_other_files(fitted, tmp_path):
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.tex").write_text("years of work")
    with pytest.raises(FileExistsError, match="it has no toolkit manifest.json"):
        toolkit.save(fitted[1], precious, overwrite=True)
    assert (precious / "chapter1.tex").read_text() == "years of work"

    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(FileExistsError, match="it is not a folder"):
        toolkit.save(fitted[1], tmp_path / "file.txt", overwrite=True)
    assert (tmp_path / "file.txt").read_text() == "x"


def test_overwrite_refuses_a_model_folder_with_added_files(fitted, tmp_path):
    folder = toolkit.save(fitted[1], tmp_path / "m")
    (folder / "notes.txt").write_text("my notes")
    with pytest.raises(FileExistsError, match=r"did not write: \['notes.txt'\]"):
        toolkit.save(fitted[1], folder, overwrite=True)
    assert (folder / "notes.txt").read_text() == "my notes"


def test_overwrite_refuses_a_symlink_and_a_forged_manifest(fitted, tmp_path):
    target = tmp_path / "data"
    target.mkdir()
    (target / "a.csv").write_text("1,2")
    (tmp_path / "link").symlink_to(target, target_is_directory=True)
    with pytest.raises(FileExistsError, match="it is a symbolic link"):
        toolkit.save(fitted[1], tmp_path / "link", overwrite=True)
    (target / "manifest.json").write_text('{"format": 2}')
    with pytest.raises(FileExistsError, match="does not look like a saved toolkit model"):
        toolkit.save(fitted[1], target, overwrite=True)
    assert (target / "a.csv").read_text() == "1,2"


def _killed_save(src, dst, stop: str, exchange: bool) -> None:
    """In a forked child: load ``src`` and save it over ``dst``, killed (SIGKILL) at the
    save's step ``stop``; without ``exchange`` the atomic folder exchange is unavailable."""
    import signal

    import toolkit.persistence.saving as p

    def step(name):
        if name == stop:
            os.kill(os.getpid(), signal.SIGKILL)

    try:
        p._step = step
        if not exchange:
            p._exchange = lambda a, b: False
        toolkit.save(toolkit.load(src), dst, overwrite=True)
    finally:
        os._exit(3)  # never back into the test runner; 3: the save ended without the kill


@pytest.mark.parametrize(
    ("stop", "exchange"),
    [
        ("folder", "1"),
        ("written", "1"),
        ("flushed", "1"),
        ("exchanged", "1"),
        ("moved-old", "0"),
        ("moved-new", "0"),
    ],
)
def test_a_save_killed_at_any_point_leaves_a_loadable_model(
    tmp_path, stop, exchange, fitted, late_fitted
):
    df, old = fitted
    new = late_fitted
    dst = toolkit.save(old, tmp_path / "model")
    src = toolkit.save(new, tmp_path / "new")
    # A forked child (this process's imports, no interpreter start-up): killed mid-save.
    child = multiprocessing.get_context("fork").Process(
        target=_killed_save, args=(src, dst, stop, exchange == "1")
    )
    child.start()
    child.join(300)
    assert child.exitcode == -9, child.exitcode
    with pytest.warns(RuntimeWarning, match="interrupted") if stop == "moved-old" else _nowarn():
        loaded = toolkit.load(dst)
    expected = new if stop in ("exchanged", "moved-new") else old
    np.testing.assert_array_equal(loaded.predict_proba(df), expected.predict_proba(df))
    # the next save cleans what the killed one left behind
    toolkit.save(new, dst, overwrite=True) if dst.exists() else toolkit.save(new, dst)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "new"]


class _nowarn:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _pretrained_case(kind, tmp_path, request):
    """(encoder, column of 12 items) for each pretrained backend, weights made locally."""
    import torch

    from toolkit import AudioEncoder, ScanEncoder

    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    t = np.arange(4000) / 8000
    waves = [((0.3 + 0.05 * i) * np.sin(2 * np.pi * (150 + 40 * i) * t), 8000) for i in range(12)]
    if kind == "torchvision":
        import torchvision

        net = torchvision.models.get_model("mobilenet_v3_small", weights=None)
        torch.save(net.state_dict(), tmp_path / "w.pt")
        enc = ImageEncoder(
            backend="torchvision", model="mobilenet_v3_small", weights=tmp_path / "w.pt",
            input_size=32, device="cpu",
        )  # fmt: skip
        return enc, [rng.random((16, 16, 3)) for _ in range(12)]
    if kind == "torchaudio":
        import torchaudio

        kwargs = request.getfixturevalue("tiny_wav2vec2_kwargs")
        net = torchaudio.models.wav2vec2_model(**kwargs)
        torch.save(net.state_dict(), tmp_path / "w.pt")
        enc = AudioEncoder(
            backend="torchaudio", model="wav2vec2_model", model_kwargs=kwargs,
            weights=tmp_path / "w.pt", device="cpu",
        )  # fmt: skip
        return enc, waves
    if kind == "monai":
        from monai.networks.nets import DenseNet

        kwargs = dict(
            spatial_dims=3, in_channels=1, out_channels=2, init_features=8, growth_rate=4,
            block_config=(2, 2), bn_size=2,
        )  # fmt: skip
        torch.save(DenseNet(**kwargs).state_dict(), tmp_path / "w.pt")
        enc = ScanEncoder(
            backend="monai", model="DenseNet", model_kwargs=kwargs, weights=tmp_path / "w.pt",
            spatial_size=(16, 16, 16), device="cpu",
        )  # fmt: skip
        return enc, [rng.random((12, 12, 12)).astype(np.float32) for _ in range(12)]
    if kind == "wav2vec2":
        folder = request.getfixturevalue("tiny_wav2vec2")
        return AudioEncoder(backend="transformers", model=str(folder), device="cpu"), waves
    texts = [f"review number {i} was {'good' if i % 2 else 'bad'}" for i in range(12)]
    return TextEncoder(backend="sentence-transformers", device="cpu"), texts


@pytest.mark.parametrize(
    "kind", ["torchvision", "torchaudio", "monai", "wav2vec2", "sentence-transformers"]
)
def test_every_pretrained_backend_round_trips(tmp_path, request, kind):
    enc, items = _pretrained_case(kind, tmp_path, request)
    df = pd.DataFrame({"x": items, "age": np.arange(12.0)})
    y = np.arange(12.0) % 3
    mods = [("m", enc, "x"), ("age", TabularEncoder(), ["age"])]
    reg = MultimodalRegressor(mods, fusion="early", random_state=0).fit(df, y)
    folder = toolkit.save(reg, tmp_path / "model")
    (tmp_path / "w.pt").unlink(missing_ok=True)  # the saved folder must not need the original
    loaded = toolkit.load(folder)
    np.testing.assert_allclose(loaded.predict(df), reg.predict(df), rtol=1e-5, atol=1e-6)
    assert Path(
        loaded.encoders_["m"].get_params()[
            "weights" if kind in ("torchvision", "torchaudio", "monai") else "model"
        ]
    ).is_relative_to(folder.resolve())


def test_hostile_json_and_schema_shapes_give_model_file_errors(folder, gated_folder, tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    saved = (folder / "manifest.json").read_text()
    (folder / "manifest.json").write_text(deep)
    with pytest.raises(ModelFileError, match="is not valid JSON"):
        toolkit.load(folder)
    (folder / "manifest.json").write_text(saved)

    def list_loader(schema):
        schema["content"]["content"]["classes_"]["__loader__"] = ["NdArrayNode"]

    _edit_schema(folder, list_loader)
    with pytest.raises(UntrustedTypeError, match="unknown skops node kind"):
        toolkit.load(folder)

    gated = Path(shutil.copytree(gated_folder, tmp_path / "g"))

    def negative_dims(schema):
        fitted = [a for a in _nodes(schema, "GatedFusion") if "module_spec_" in a]
        dims = fitted[0]["module_spec_"]["content"]["dims"]
        dims["content"][0].update(content="-5", __id__=1)  # a fresh object, not a cached one

    _edit_schema(gated, negative_dims)
    with pytest.raises(ModelFileError, match="gated network's description is malformed"):
        toolkit.load(gated)


def test_decompression_bomb_is_refused_before_unpacking(folder):
    archive = folder / "model.skops"
    with zipfile.ZipFile(archive) as zf:
        files = {name: zf.read(name) for name in zf.namelist()}
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            zf.writestr(name, content)
        zf.writestr("padding.npy", b"\0" * (200 * 1024**2))
    _rewrite_manifest(folder)
    assert archive.stat().st_size < 2 * 1024**2
    with pytest.raises(ModelFileError, match="decompression bomb"):
        toolkit.load(folder)


def test_cleanup_touches_only_dead_saves_of_this_machine(fitted, tmp_path):
    from toolkit.persistence.saving import _host_tag

    hexid = "0" * 32
    precious = tmp_path / f".m.saving-{_host_tag()}-999999-{hexid}"  # dead pid, user's file
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    other_host = tmp_path / f".m.saving-abcdefabcdef-999999-{hexid}"
    other_host.mkdir()
    (other_host / "model.skops").write_text("another machine's save in progress")
    alive = tmp_path / f".m.replaced-{_host_tag()}-{os.getpid()}-{hexid}"
    alive.mkdir()
    (alive / "manifest.json").write_text("{}")
    dead = tmp_path / f".m.saving-{_host_tag()}-999999-{'1' * 32}"
    dead.mkdir()
    (dead / ".toolkit-save-in-progress").write_text("1" * 32)  # a save's own marker
    (dead / "model.skops").write_text("left by a killed save")
    toolkit.save(fitted[1], tmp_path / "m")
    assert (precious / "thesis.tex").read_text() == "years of work"
    assert other_host.exists() and alive.exists() and not dead.exists()
    # a missing model is not replaced by a backup whose process still runs
    shutil.rmtree(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        toolkit.load(tmp_path / "m")


def test_overwrite_refuses_a_manifest_without_a_file_table(fitted, tmp_path):
    folder = tmp_path / "m"
    (folder / "encoders" / "notes").mkdir(parents=True)
    (folder / "encoders" / "notes" / "thesis.tex").write_text("years of work")
    (folder / "model.skops").write_text("x")
    (folder / "manifest.json").write_text(
        json.dumps({"format": 1, "class": "toolkit.estimators.MultimodalClassifier"})
    )
    with pytest.raises(FileExistsError, match="lists no files"):
        toolkit.save(fitted[1], folder, overwrite=True)
    assert (folder / "encoders" / "notes" / "thesis.tex").exists()


def test_save_normalises_the_path_and_never_replaces_the_working_folder(
    fitted, tmp_path, monkeypatch
):
    folder = toolkit.save(fitted[1], tmp_path / "m")
    monkeypatch.chdir(folder)
    with pytest.raises(ValueError, match="is the working folder or one of its parents"):
        toolkit.save(fitted[1], ".", overwrite=True)
    with pytest.raises(ValueError, match="is the working folder or one of its parents"):
        toolkit.save(fitted[1], tmp_path, overwrite=True)
    monkeypatch.chdir(tmp_path)
    out = toolkit.save(fitted[1], "x/sub/..")
    assert out == tmp_path / "x" and (tmp_path / "x" / "manifest.json").is_file()
    assert not (tmp_path / "x" / "sub").exists()


def test_a_network_that_does_not_fit_its_weights_is_refused_before_it_is_built(tmp_path, request):
    """The architecture and its arguments come from the file: they are built on the meta
    device and compared with the weights' header first, so a tiny folder cannot make load
    allocate a huge network."""
    enc, items = _pretrained_case("torchvision", tmp_path, request)
    df = pd.DataFrame({"x": items, "age": np.arange(12.0)})
    model = MultimodalRegressor([("m", enc, "x")], fusion="early", random_state=0)
    folder = toolkit.save(model.fit(df, np.arange(12.0) % 3), tmp_path / "model")

    def swap(schema):
        for attrs in _nodes(schema, "ImageEncoder"):
            attrs["model"].update(content='"vit_h_14"', __id__=2)

    _edit_schema(folder, swap)
    with pytest.raises(ModelFileError, match="do not fit encoder 'm''s network"):
        toolkit.load(folder)
    with pytest.raises(ModelFileError, match="describes a network of .* above max_bytes"):
        toolkit.load(folder, max_bytes=folder_size(folder) + 1000)


def folder_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def test_a_registered_fusion_is_saved_and_loaded(tmp_path, monkeypatch):
    """Adding a strategy is one file plus one registry line: it is then loadable too."""
    from toolkit.fusion import FUSIONS
    from toolkit.fusion.late import LateFusion

    class MeanFusion(LateFusion):
        def __init__(self, random_state=None):
            super().__init__(combine="mean", random_state=random_state)

        def get_params(self, deep=True):
            return {"random_state": self.random_state}

    MeanFusion.__module__, MeanFusion.__qualname__ = "tests_plugin", "MeanFusion"
    import types

    plugin = types.ModuleType("tests_plugin")
    plugin.MeanFusion = MeanFusion
    monkeypatch.setitem(sys.modules, "tests_plugin", plugin)
    df, y, mods = _data()
    clf = MultimodalClassifier(mods, fusion=MeanFusion(), random_state=0).fit(df, y)
    folder = toolkit.save(clf, tmp_path / "m")
    with pytest.raises(UntrustedTypeError, match="tests_plugin.MeanFusion"):
        toolkit.load(folder)
    monkeypatch.setitem(FUSIONS, "mean", MeanFusion)
    np.testing.assert_array_equal(toolkit.load(folder).predict_proba(df), clf.predict_proba(df))
    # the module that defines it must be importable: say so, not a raw traceback
    monkeypatch.delitem(sys.modules, "tests_plugin")
    with pytest.raises(ModelFileError, match="whose module cannot be imported"):
        toolkit.load(folder)
