"""Fine-tuning of pretrained backbones (issue 16): ImageEncoder(backend="torchvision"),
AudioEncoder(backend="transformers") and ScanEncoder(backend="monai") with ``fine_tune``
train their top blocks and a new head on the labels inside fit(X, y, groups).

The "pretrained" networks are tiny random ones built locally, their batch-norm statistics
calibrated on random inputs (as a real pretrained network's are), saved as safetensors or
with save_pretrained; nothing is downloaded.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

import toolkit
from toolkit import (
    AudioEncoder,
    ImageEncoder,
    MultimodalClassifier,
    ScanEncoder,
    TabularEncoder,
)

MOBILENET = {"width_mult": 0.25}
DENSENET = {
    "spatial_dims": 3, "in_channels": 1, "out_channels": 2, "init_features": 4,
    "growth_rate": 4, "block_config": (1, 1), "bn_size": 2,
}  # fmt: skip
FAST = {"device": "cpu", "progress": False, "random_state": 0}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The networks here are tiny: torch on one thread (two threads waiting at a barrier per
    small operation ran 100x slower on a busy machine)."""
    from toolkit.encoders.base import one_torch_thread

    with one_torch_thread():
        yield


def _calibrated(net, shape):
    """``net`` with batch-norm running statistics averaged over random batches of ``shape``."""
    import torch

    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(*shape))
    return net.eval()


def _save(net, path):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory):
    """Weights of a tiny torchvision mobilenet_v3_small (width 0.25, 374k parameters)."""
    import torch
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.get_model("mobilenet_v3_small", weights=None, **MOBILENET)
    net = _calibrated(net, (16, 3, 32, 32))
    return _save(net, tmp_path_factory.mktemp("mnv3") / "mobilenet.safetensors")


@pytest.fixture(scope="module")
def densenet(tmp_path_factory):
    """Weights of a tiny MONAI 3-D DenseNet (two dense blocks of one layer)."""
    import torch
    from monai.networks.nets import DenseNet

    torch.manual_seed(0)
    net = _calibrated(DenseNet(**DENSENET), (8, 1, 12, 12, 12))
    return _save(net, tmp_path_factory.mktemp("densenet") / "densenet.safetensors")


@pytest.fixture(scope="module")
def wav2vec(tmp_path_factory):
    """A tiny random wav2vec 2.0 (two 16-d layers) and its feature extractor."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    folder = tmp_path_factory.mktemp("w2v2")
    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2, num_feat_extract_layers=2, classifier_proj_size=8,
    )  # fmt: skip
    Wav2Vec2Model(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=16000).save_pretrained(folder)
    return folder


def halves(n: int, seed: int):
    """16x16 grey images, the top half (label 1) or the bottom half (label 0) brighter."""
    rng = np.random.default_rng(seed)
    labels, images = rng.integers(0, 2, n), []
    for label in labels:
        img = rng.random((16, 16)) * 0.5
        img[:8] += 0.5 * label
        img[8:] += 0.5 * (1 - label)
        images.append(img)
    return images, labels


def tones(n: int, seed: int):
    """0.25 s noisy tones at 16 kHz: 200 Hz (label 0) or 2000 Hz (label 1)."""
    rng = np.random.default_rng(seed)
    labels, clips = rng.integers(0, 2, n), []
    t = np.arange(4000) / 16000
    for label in labels:
        wave = np.sin(2 * np.pi * (200, 2000)[label] * t) + 0.1 * rng.standard_normal(len(t))
        clips.append((wave.astype(np.float32), 16000))
    return clips, labels


def volumes(n: int, seed: int):
    """12^3 noise volumes; label 1 has a bright slab in its first half."""
    rng = np.random.default_rng(seed)
    labels, vols = rng.integers(0, 2, n), []
    for label in labels:
        v = rng.random((12, 12, 12)).astype(np.float32)
        v[:6] += 1.0 * label
        vols.append(v)
    return vols, labels


def image_encoder(weights, **kwargs):
    params = dict(
        backend="torchvision", model="mobilenet_v3_small", model_kwargs=MOBILENET,
        weights=str(weights), fine_tune=True, trainable_blocks=2, input_size=32,
        max_epochs=6, batch_size=8, **FAST,
    )  # fmt: skip
    return ImageEncoder(**{**params, **kwargs})


def audio_encoder(folder, **kwargs):
    params = dict(
        backend="transformers", model=str(folder), fine_tune="top", trainable_layers=1,
        max_epochs=4, batch_size=8, **FAST,
    )  # fmt: skip
    return AudioEncoder(**{**params, **kwargs})


def scan_encoder(weights, **kwargs):
    params = dict(
        backend="monai", model="DenseNet", model_kwargs=DENSENET, weights=str(weights),
        spatial_size=(12, 12, 12), fine_tune=True, trainable_blocks=2, max_epochs=5,
        batch_size=4, learning_rate=3e-3, **FAST,
    )  # fmt: skip
    return ScanEncoder(**{**params, **kwargs})


def _exact(model, df):
    """Modality Shapley values add up to each row's output (probability of the positive
    class) minus the base value."""
    exp = model.explain(df)
    np.testing.assert_allclose(
        exp.values.sum(axis=1) + exp.base_values, model.predict_proba(df)[:, 1], atol=1e-9
    )


def _state(path):
    from safetensors.torch import load_file

    return load_file(str(path))


# -- images ---------------------------------------------------------------------------------


def test_image_fine_tuning_trains_only_the_top_blocks_and_learns(mobilenet):
    """Known answer: which half is bright is learned (held-out accuracy of the head's scores
    near 1, chance 0.5); every tensor outside the two top blocks and the head is bit-identical
    to the loaded weights, and the top blocks did change."""
    images, y = halves(48, 0)
    test_images, test_y = halves(40, 1)
    enc = image_encoder(mobilenet, max_epochs=10)
    assert enc.supervised and not enc.fixed
    assert ImageEncoder(backend="torchvision").fixed  # frozen stays the default
    enc.fit(images, y)
    assert enc.trainable_blocks_ == ["features.12", "classifier.0", "classifier.3"]
    assert enc.n_outputs_ == 2 and enc.n_features_out_ == 256
    assert enc.transform(test_images).shape == (40, 256)  # the head's input
    scores, present = enc.encode_scores(test_images)
    assert scores.shape == (40, 2) and present.all()
    assert (scores.argmax(1) == test_y).mean() >= 0.9
    assert len(enc.history_) == enc.n_epochs_ and "valid_loss" in enc.history_[0]

    before = _state(mobilenet)
    after = {k: v.cpu() for k, v in enc.model_.state_dict().items()}
    top = ("features.12.", "classifier.0.", "classifier.3.")
    changed = {k for k in before if not np.array_equal(before[k].numpy(), after[k].numpy())}
    assert changed and all(k.startswith(top) for k in changed)
    assert any(k.startswith("features.12.") for k in changed)
    assert after["classifier.3.weight"].shape == (2, 256)  # the new head


def test_image_fine_tuning_head_alone_and_same_seed_same_outputs(mobilenet):
    images, y = halves(30, 2)
    enc = image_encoder(mobilenet, trainable_blocks=0, max_epochs=3)
    a = clone(enc).fit(images, y)
    assert a.trainable_blocks_ == ["classifier.3"]
    b = clone(enc).fit(images, y)
    c = clone(enc).set_params(random_state=5).fit(images, y)
    np.testing.assert_array_equal(a.encode_scores(images)[0], b.encode_scores(images)[0])
    assert not np.allclose(a.encode_scores(images)[0], c.encode_scores(images)[0])
    # the head alone trains: the features (its input) are the frozen network's
    frozen = ImageEncoder(
        backend="torchvision", model="mobilenet_v3_small", model_kwargs=MOBILENET,
        weights=str(mobilenet), input_size=32, device="cpu", progress=False,
    ).fit(images)  # fmt: skip
    np.testing.assert_allclose(a.transform(images), frozen.transform(images), atol=1e-6)


def test_fine_tuning_validation_rows_are_whole_groups(monkeypatch, mobilenet):
    import toolkit.model_selection as inner

    images, y = halves(40, 3)
    groups = np.repeat(np.arange(8), 5)
    seen = []
    real = inner.validation_split

    def spy(n, groups_, fraction, seed, min_rows=20):
        out = real(n, groups_, fraction, seed, min_rows)
        seen.append((groups_, out))
        return out

    monkeypatch.setattr(inner, "validation_split", spy)
    image_encoder(mobilenet, max_epochs=1).fit(images, y, groups=groups)
    ((passed, (train, valid)),) = seen
    np.testing.assert_array_equal(passed, groups)
    assert len(valid) > 0 and not set(groups[train]) & set(groups[valid])


def test_image_fine_tuned_classifier_crossfits_saves_loads_and_explains(
    tmp_path, monkeypatch, mobilenet
):
    """Through MultimodalClassifier: the encoder is trained once on every row and once per
    inner fold on the other folds' rows (the fusion learns from out-of-fold scores); the
    saved model predicts the same after toolkit.load; explanations add up exactly."""
    images, y = halves(40, 4)
    df = pd.DataFrame({"image": images, "x": np.random.default_rng(0).random(40)})
    sizes = []
    real = ImageEncoder._train_on

    def spy(self, decoded, *args):
        sizes.append(len(decoded))
        return real(self, decoded, *args)

    monkeypatch.setattr(ImageEncoder, "_train_on", spy)
    clf = MultimodalClassifier(
        [
            ("image", image_encoder(mobilenet, max_epochs=2, random_state=None), "image"),
            ("tab", TabularEncoder(), ["x"]),
        ],
        fusion="late",
        encoder_cv=2,
        random_state=0,
    ).fit(df, y)
    assert sizes[0] == 40 and sorted(sizes[1:]) == [20, 20]
    assert clf.embedding_widths_["image"] == 2  # one score per class
    assert clf.encoders_["image"].random_state is not None  # seeded by the estimator
    toolkit.save(clf, tmp_path / "model")
    manifest = (tmp_path / "model" / "manifest.json").read_text()
    assert "encoders/image/weights.safetensors" in manifest
    loaded = toolkit.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.predict_proba(df), clf.predict_proba(df))
    enc = loaded.encoders_["image"]
    assert enc.trainable_blocks_ == clf.encoders_["image"].trainable_blocks_
    _exact(clf, df)


def test_saved_fine_tuned_network_is_checked_against_its_architecture(tmp_path, mobilenet):
    """The weights file must fit the network rebuilt on the meta device (architecture from
    torchvision's model list, head of n_outputs_); a name outside that list is refused."""
    from toolkit._utils import tensor_table

    images, y = halves(24, 5)
    enc = image_encoder(mobilenet, max_epochs=1).fit(images, y)
    assert enc.weight_parameters() == ("weights",)
    assert enc.save_weights(tmp_path) == {"weights": "weights.safetensors"}
    saved = tensor_table(_state(tmp_path / "weights.safetensors"))
    assert enc.expected_weights() == saved
    assert saved["classifier.3.weight"]["shape"] == [2, 256]
    restored = clone(enc)
    for attr in ("n_outputs_", "n_features_out_", "trainable_blocks_"):
        setattr(restored, attr, getattr(enc, attr))
    restored.load_weights({"weights": str(tmp_path / "weights.safetensors")})
    np.testing.assert_array_equal(restored.transform(images), enc.transform(images))
    bad = clone(enc).set_params(model="get_model")
    bad.n_outputs_ = 2
    with pytest.raises(ValueError, match="not a model torchvision lists"):
        bad.expected_weights()


# -- audio ----------------------------------------------------------------------------------


def test_audio_fine_tuning_trains_top_layer_projection_and_head(wav2vec):
    from safetensors.torch import load_file

    clips, y = tones(24, 0)
    enc = audio_encoder(wav2vec)
    assert enc.supervised and not AudioEncoder(backend="transformers").supervised
    enc.fit(clips, y)
    assert enc.trainable_blocks_ == ["wav2vec2.encoder.layers.1", "projector", "classifier"]
    assert enc.transform(clips).shape == (24, 8)  # the pooled projection
    scores, _ = enc.encode_scores(clips)
    assert scores.shape == (24, 2)
    losses = [h["train_loss"] for h in enc.history_]
    assert min(losses[1:]) < losses[0]
    before = load_file(str(wav2vec / "model.safetensors"))
    after = enc.model_.wav2vec2.state_dict()
    changed = {
        k for k in before if not np.array_equal(before[k].numpy(), after[k].cpu().numpy())
    }
    assert changed and all(k.startswith("encoder.layers.1.") for k in changed)
    again = clone(enc).fit(clips, y)
    np.testing.assert_array_equal(again.encode_scores(clips)[0], scores)


def test_audio_fine_tuned_classifier_saves_loads_and_explains(tmp_path, wav2vec):
    clips, y = tones(24, 1)
    df = pd.DataFrame({"clip": clips, "x": np.random.default_rng(1).random(24)})
    clf = MultimodalClassifier(
        [
            ("audio", audio_encoder(wav2vec, max_epochs=2), "clip"),
            ("tab", TabularEncoder(), ["x"]),
        ],
        fusion="early",
        encoder_cv=2,
        random_state=0,
    ).fit(df, y)
    toolkit.save(clf, tmp_path / "model")
    loaded = toolkit.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.predict_proba(df), clf.predict_proba(df))
    assert type(loaded.encoders_["audio"].model_).__name__ == "Wav2Vec2ForSequenceClassification"
    _exact(clf, df)


# -- scans ----------------------------------------------------------------------------------


def test_scan_fine_tuning_trains_top_blocks_saves_loads_and_explains(tmp_path, densenet):
    vols, y = volumes(24, 0)
    enc = scan_encoder(densenet).fit(vols, y)
    assert enc.supervised and not ScanEncoder(backend="monai").supervised
    assert enc.trainable_blocks_ == ["features.denseblock2", "features.norm5", "class_layers.out"]
    before, after = _state(densenet), enc.model_.state_dict()
    top = ("features.denseblock2.", "features.norm5.", "class_layers.out.")
    changed = {k for k in before if not np.array_equal(before[k].numpy(), after[k].numpy())}
    assert changed and all(k.startswith(top) for k in changed)
    # batch-norm statistics stay as loaded, even in the trained blocks
    assert all("running" not in k and "num_batches" not in k for k in changed)
    np.testing.assert_array_equal(
        clone(enc).fit(vols, y).encode_scores(vols)[0], enc.encode_scores(vols)[0]
    )

    df = pd.DataFrame({"scan": vols, "x": np.random.default_rng(2).random(24)})
    clf = MultimodalClassifier(
        [
            ("scan", scan_encoder(densenet, max_epochs=2), "scan"),
            ("tab", TabularEncoder(), ["x"]),
        ],
        fusion="late",
        encoder_cv=2,
        random_state=0,
    ).fit(df, y)
    toolkit.save(clf, tmp_path / "model")
    loaded = toolkit.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.predict_proba(df), clf.predict_proba(df))
    _exact(loaded, df)


# -- errors ---------------------------------------------------------------------------------


def test_fine_tune_on_a_backend_that_cannot_is_refused():
    with pytest.raises(ValueError, match="backend='descriptors' cannot be fine-tuned"):
        ImageEncoder(fine_tune=True).fit([np.zeros((8, 8))])
    with pytest.raises(ValueError, match="backend='statistics' cannot be fine-tuned"):
        ScanEncoder(fine_tune="top", spatial_size=(8, 8, 8)).fit([np.zeros((8, 8, 8))])
    with pytest.raises(ValueError, match="fine_tune"):
        ImageEncoder(backend="torchvision", fine_tune="all").fit([np.zeros((8, 8))], [0])


def test_fine_tune_settings_errors(mobilenet, wav2vec):
    images, y = halves(24, 6)
    with pytest.raises(ValueError, match="trainable_blocks=99 but MobileNetV3 has 14 blocks"):
        image_encoder(mobilenet, trainable_blocks=99).fit(images, y)
    with pytest.raises(ValueError, match="trainable_layers=3 but .* has 2 blocks"):
        audio_encoder(wav2vec, trainable_layers=3).fit(*tones(20, 0))
    with pytest.raises(ValueError, match="learns its features from the labels"):
        image_encoder(mobilenet).fit(images)
    with pytest.raises(ValueError, match="needs weights=<state dict file>; nothing is"):
        image_encoder(None).set_params(weights=None).fit(images, y)
    with pytest.raises(ValueError, match="give model="):
        ImageEncoder(backend="torchvision", fine_tune=True).fit(images, y)
    with pytest.raises(ValueError, match="does not fit torchvision's 'mobilenet_v3_small' with"):
        image_encoder(mobilenet, model_kwargs={"width_mult": 0.5}).fit(images, y)
    with pytest.raises(ValueError, match="model_kwargs .* do not fit torchvision's 'resnet18'"):
        image_encoder(mobilenet, model="resnet18", model_kwargs={"no_such": 1}).fit(images, y)
    with pytest.raises(ValueError, match="trainable_blocks"):
        image_encoder(mobilenet, trainable_blocks=-1).fit(images, y)


def test_backbone_blocks_of_common_architectures():
    """Known answers: the blocks counted by trainable_blocks, top last, head left out."""
    import torch
    import torchvision
    from monai.networks.nets import DenseNet121

    from toolkit.encoders._finetune import backbone_blocks, head_name

    with torch.device("meta"):
        nets = {
            "resnet18": torchvision.models.resnet18(),
            "vit_b_16": torchvision.models.vit_b_16(),
            "densenet": DenseNet121(spatial_dims=3, in_channels=1, out_channels=2),
        }
    blocks = {k: backbone_blocks(net, head_name(net)) for k, net in nets.items()}
    assert head_name(nets["resnet18"]) == "fc"
    assert blocks["resnet18"] == ["conv1", "bn1"] + [
        f"layer{i}.{j}" for i in range(1, 5) for j in range(2)
    ]
    assert head_name(nets["vit_b_16"]) == "heads.head"
    assert blocks["vit_b_16"][-3:] == [
        "encoder.layers.encoder_layer_10", "encoder.layers.encoder_layer_11", "encoder.ln",
    ]  # fmt: skip
    assert len(blocks["vit_b_16"]) == 14  # patch projection, 12 layers, final norm
    assert blocks["densenet"][-3:] == [
        "features.transition3", "features.denseblock4", "features.norm5",
    ]  # fmt: skip
