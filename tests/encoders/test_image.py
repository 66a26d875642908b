"""ImageEncoder: fixed descriptors and the torchvision backend."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit import ImageEncoder
from toolkit.exceptions import ReadError


def _images():
    rng = np.random.default_rng(0)
    return [
        rng.random((8, 8)),
        None,
        rng.integers(0, 255, (20, 30, 3), dtype=np.uint8),
        rng.random((12, 12, 4)),
    ]


def test_descriptors_shape_mask_determinism_and_names():
    enc = ImageEncoder()
    block, available = enc.fit(_images()).encode(_images())
    assert block.shape == (4, 427) and block.dtype == np.float32
    assert available.tolist() == [True, False, True, True]
    assert np.isfinite(block[available]).all()
    np.testing.assert_array_equal(
        block[available], ImageEncoder().fit(_images()).transform(_images())[available]
    )
    assert len(enc.get_feature_names_out()) == 427


def test_descriptors_see_orientation():
    vertical = np.zeros((32, 32))
    vertical[:, ::4] = 1.0
    horizontal = vertical.T.copy()
    enc = ImageEncoder(pixel_size=4, cells=1, orientations=4).fit([vertical])
    a, b = enc.transform([vertical, horizontal])
    hog = slice(16 + 24, 16 + 24 + 4)
    assert np.argmax(a[hog]) != np.argmax(b[hog])


def test_real_pneumoniamnist_images(real_data):
    data = np.load(real_data / "pneumoniamnist" / "pneumoniamnist.npz")
    images = list(data["val_images"][:16])
    block = ImageEncoder().fit(images).transform(images)
    assert block.shape == (16, 427) and np.isfinite(block).all()


def test_4d_array_error_names_row():
    with pytest.raises(ReadError, match="row 1 of the column.*got 4 dimensions"):
        ImageEncoder().fit_transform([np.zeros((4, 4)), np.zeros((1, 2, 3, 4))])


def test_on_error_missing_marks_only_that_item(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    items = [np.zeros((4, 4)), str(bad)]
    with pytest.warns(UserWarning, match=r"1 unreadable image item.*row 1.*bad\.png"):
        block, available = ImageEncoder(on_error="missing").fit(items).encode(items)
    assert available.tolist() == [True, False]


def test_torchvision_backend_with_saved_state_dict(tmp_path):
    import torch
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.get_model("mobilenet_v3_small", weights=None)
    path = tmp_path / "mnv3.pt"
    torch.save(net.state_dict(), path)
    enc = ImageEncoder(
        backend="torchvision", model="mobilenet_v3_small", weights=path, input_size=32, device="cpu"
    )
    block = enc.fit(_images()).transform(_images())
    assert block.shape == (4, 1024)
    assert np.isfinite(block[[0, 2, 3]]).all() and np.isnan(block[1]).all()
    # The loaded weights are the saved ones: same features as the original network's penultimate layer.
    from toolkit.encoders._torch import penultimate

    net.eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.inference_mode():
        np.testing.assert_allclose(
            penultimate(enc.model_, x).numpy(), penultimate(net, x).numpy(), atol=1e-6
        )


def test_torchvision_backend_needs_weights():
    with pytest.raises(ValueError, match="needs weights=<state dict file>; nothing is downloaded"):
        ImageEncoder(backend="torchvision", model="resnet18").fit([np.zeros((4, 4))])


def test_torchvision_mismatched_weights(tmp_path):
    import torch

    path = tmp_path / "wrong.pt"
    torch.save({"foo.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="does not match the MobileNetV3 architecture"):
        ImageEncoder(backend="torchvision", model="mobilenet_v3_small", weights=path).fit(
            [np.zeros((4, 4))]
        )


def test_build_network_on_meta_device_matches_the_real_network():
    import torch

    enc = ImageEncoder(backend="torchvision", model="mobilenet_v3_small")
    with torch.device("meta"):
        meta = enc.build_network()
    real = enc.build_network()
    assert all(t.is_meta for t in meta.state_dict().values())
    assert {k: tuple(v.shape) for k, v in meta.state_dict().items()} == {
        k: tuple(v.shape) for k, v in real.state_dict().items()
    }
    assert not any(t.is_meta for t in real.state_dict().values())
    with pytest.raises(ValueError, match="backend='descriptors'.*needs backend='torchvision'"):
        ImageEncoder().build_network()
    with pytest.raises(ValueError, match="unknown torchvision architecture 'nope'"):
        ImageEncoder(backend="torchvision", model="nope").build_network()
