"""ScanEncoder: MONAI preprocessing + statistics, and the MONAI network backend."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit import ScanEncoder
from toolkit.exceptions import ReadError


def _volume(n_blobs, seed=0, size=24):
    rng = np.random.default_rng(seed)
    vol = rng.normal(0.2, 0.02, (size, size, size))
    zz, yy, xx = np.mgrid[0:size, 0:size, 0:size]
    for _ in range(n_blobs):
        c = rng.integers(5, size - 5, 3)
        vol[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= 9] = 1.0
    return vol


def test_statistics_shape_mask_names_and_determinism():
    items = [_volume(1), None, _volume(3, seed=1)]
    enc = ScanEncoder(spatial_size=(16, 16, 16))
    block, available = enc.fit(items).encode(items)
    assert block.shape == (3, 120) and block.dtype == np.float32
    assert available.tolist() == [True, False, True]
    assert np.isfinite(block[available]).all()
    assert len(enc.get_feature_names_out()) == 120
    np.testing.assert_array_equal(block[available], enc.transform(items)[available])


def test_bright_lesions_are_counted():
    enc = ScanEncoder(spatial_size=(24, 24, 24)).fit([_volume(1)])
    names = list(enc.get_feature_names_out())
    one, many = enc.transform([_volume(1, seed=3), _volume(5, seed=3)])
    i = names.index("bright_fraction")
    assert many[i] > one[i]


def test_real_nifti_files(caplog):
    nib_tests = pytest.importorskip("nibabel.tests")
    from pathlib import Path

    folder = Path(nib_tests.__file__).parent / "data"
    files = [folder / "anatomical.nii", folder / "example4d.nii.gz"]
    with caplog.at_level("INFO"):
        block = ScanEncoder(spatial_size=(16, 16, 16)).fit(files).transform(files)
    assert block.shape == (2, 120) and np.isfinite(block).all()
    # MONAI's "nvImageCodec is not available" is not said on every read
    assert not [r for r in caplog.records if "nvImageCodec" in r.getMessage()]


def test_text_file_named_nifti_error_names_row(tmp_path):
    fake = tmp_path / "fake.nii.gz"
    fake.write_text("hello")
    with pytest.raises(
        ReadError, match=r"row 0 of the column: NIfTI file '.*fake\.nii\.gz' could not be read"
    ):
        ScanEncoder().fit_transform([str(fake)])


def test_monai_densenet_backend_with_state_dict(tmp_path):
    import torch
    from monai.networks.nets import DenseNet121

    torch.manual_seed(0)
    net = DenseNet121(spatial_dims=3, in_channels=1, out_channels=2)
    path = tmp_path / "densenet.pt"
    torch.save(net.state_dict(), path)
    enc = ScanEncoder(
        backend="monai", model="DenseNet121", weights=path, spatial_size=(32, 32, 32), device="cpu"
    )
    block = enc.fit([_volume(1)]).transform([_volume(1), None, _volume(2)])
    assert block.shape == (3, 1024)
    assert np.isfinite(block[[0, 2]]).all() and np.isnan(block[1]).all()
    # The saved weights were loaded: the original network gives the same features.
    from toolkit.encoders._torch import penultimate
    from toolkit.io import read_scan

    x = torch.from_numpy(read_scan(_volume(2), spatial_size=(32, 32, 32)))[None, None]
    with torch.inference_mode():
        expected = penultimate(net.eval(), x).numpy()[0]
    np.testing.assert_allclose(block[2], expected, atol=1e-5)


def test_monai_backend_unknown_network(tmp_path):
    with pytest.raises(ValueError, match="unknown MONAI network 'NotANet'"):
        ScanEncoder(backend="monai", model="NotANet", weights=tmp_path / "w.pt").fit([_volume(1)])


def test_max_voxels_is_validated_and_passed_to_the_reader(tmp_path):
    import nibabel as nib
    from sklearn.utils._param_validation import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="max_voxels"):
        ScanEncoder(max_voxels=0).fit([_volume(1)])
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(_volume(1, size=12).astype(np.float32), np.eye(4)), path)
    with pytest.raises(ReadError, match=r"row 0 of the column: .*1,728 voxels \(from its header\)"):
        ScanEncoder(spatial_size=(8, 8, 8), max_voxels=1000).fit_transform([str(path)])
    block = ScanEncoder(spatial_size=(8, 8, 8), max_voxels=1728).fit_transform([str(path)])
    assert block.shape == (1, 32 + 11 + 13 + 64) and np.isfinite(block).all()


@pytest.mark.parametrize(
    "model_kwargs", [None, {"spatial_dims": 3, "in_channels": 2, "out_channels": 3}]
)
def test_build_network_on_meta_device_matches_the_real_network(model_kwargs):
    import torch

    enc = ScanEncoder(backend="monai", model="DenseNet121", model_kwargs=model_kwargs)
    with torch.device("meta"):
        meta = enc.build_network()
    real = enc.build_network()
    assert all(t.is_meta for t in meta.state_dict().values())
    shapes = {k: tuple(v.shape) for k, v in real.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in meta.state_dict().items()} == shapes
    channels = (model_kwargs or {"in_channels": 1})["in_channels"]
    assert shapes["features.conv0.weight"][1] == channels  # the default kwargs are used
    with pytest.raises(ValueError, match="backend='statistics'.*needs backend='monai'"):
        ScanEncoder().build_network()


# -- batched preprocessing ---------------------------------------------------------------


def test_batched_resize_and_scale_matches_monai_per_volume():
    import warnings

    import torch

    from toolkit.io.scan import preprocess_scan, resize_and_scale

    rng = np.random.default_rng(0)
    volumes = [rng.gamma(2.0, size=(12, 10, 14)).astype(np.float32) for _ in range(3)]
    volumes += [
        rng.normal(size=(9, 9, 9)).astype(np.float32),  # another shape: its own group
        np.ones((12, 10, 14), np.float32),  # equal percentiles: shifted, not scaled
        rng.normal(size=(8, 8, 8)).astype(np.float32),  # already the target size
    ]
    tensors = [torch.from_numpy(v)[None] for v in volumes]
    batched = resize_and_scale(tensors, (8, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns on the constant volume
        for tensor, out in zip(tensors, batched, strict=True):
            ref = preprocess_scan(tensor, spatial_size=(8, 8, 8), orientation=None)
            assert out.shape == (8, 8, 8) and out.dtype == torch.float32
            np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-6)
    assert float(batched[0].min()) == 0.0 and float(batched[0].max()) == 1.0
    np.testing.assert_array_equal(batched[4].numpy(), 0.0)
    # A volume alone gets exactly what it gets in the batch.
    alone = resize_and_scale(tensors[1:2], (8, 8, 8))[0]
    np.testing.assert_array_equal(alone.numpy(), batched[1].numpy())


def test_a_volume_that_fails_batched_scaling_is_marked_missing_alone():
    from toolkit.io.scan import resize_and_scale

    rng = np.random.default_rng(1)
    good = [rng.random((6, 6, 6)).astype(np.float32) for _ in range(2)]
    extreme = np.full((6, 6, 6), -3e38, np.float32)
    extreme[3:] = 3e38  # the percentile span overflows float32: the scaled volume is NaN
    out = resize_and_scale([good[0], extreme, good[1]], (6, 6, 6))
    assert isinstance(out[1], ReadError) and "non-finite after preprocessing" in str(out[1])
    items = [good[0], extreme, good[1]]
    with pytest.raises(ReadError, match=r"row 1 of the column: scan became non-finite"):
        ScanEncoder(spatial_size=(6, 6, 6), batch_size=3).fit(items).transform(items)
    with pytest.warns(UserWarning, match=r"1 unreadable scan item.*row 1: scan became non-finite"):
        block, available = (
            ScanEncoder(spatial_size=(6, 6, 6), batch_size=3, on_error="missing")
            .fit(items)
            .encode(items)
        )
    assert available.tolist() == [True, False, True] and np.isfinite(block[[0, 2]]).all()


# -- a fixed intensity window (issue 27: lesions stay local) ------------------------------


def _body_with_lesions(lesions: bool, size=16):
    """A calibrated volume: body 0.4, background 0.05 and, optionally, two bright lesions
    (0.9) filling about 6% of the voxels, all in the half z < size / 2."""
    rng = np.random.default_rng(7)
    vol = np.full((size, size, size), 0.05) + rng.normal(0, 0.02, (size,) * 3)
    vol[2:-2, 2:-2, 2:-2] += 0.35
    if lesions:
        vol[3:7, 3:7, 3:8] = 0.9
        vol[3:7, 9:13, 8:13] = 0.9
    return vol.astype(np.float32)


def test_a_fixed_window_keeps_a_lesion_local_where_percentiles_darken_the_whole_volume():
    clean, sick = _body_with_lesions(False), _body_with_lesions(True)
    names = list(ScanEncoder(spatial_size=(16, 16, 16), grid=2).fit([clean]).get_feature_names_out())
    far = [names.index(f"grid{i}") for i in range(4, 8)]  # z >= 8: no lesion voxel there
    for window, local in ((None, False), ((0.0, 1.0), True)):
        enc = ScanEncoder(spatial_size=(16, 16, 16), grid=2, intensity_range=window)
        a, b = enc.fit([clean]).transform([clean, sick])
        assert np.allclose(a[far], b[far], atol=1e-6) is local, window
        if window is not None:  # (x - a_min) / (a_max - a_min), clipped: the body stays 0.4
            scaled = enc.read_item(sick)
            np.testing.assert_allclose(scaled, np.clip(sick, 0, 1), atol=1e-6)
    # With percentiles the lesions, above the 99th percentile's share, darken the rest.
    pct = ScanEncoder(spatial_size=(16, 16, 16), grid=2).fit([clean])
    assert pct.transform([sick])[0][far].mean() < pct.transform([clean])[0][far].mean() - 0.1


def test_the_window_matches_monai_and_is_checked():
    import torch

    from toolkit.io.scan import preprocess_scan, resize_and_scale

    rng = np.random.default_rng(3)
    volumes = [rng.normal(0, 500, (9, 10, 11)).astype(np.float32) for _ in range(2)]
    batched = resize_and_scale(
        [torch.from_numpy(v)[None] for v in volumes], (8, 8, 8), intensity_range=(-1000, 400)
    )
    for v, out in zip(volumes, batched, strict=True):
        ref = preprocess_scan(
            torch.from_numpy(v)[None], (8, 8, 8), orientation=None, intensity_range=(-1000, 400)
        )
        np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-6)
    for bad in ((1.0, 1.0), (2.0, 1.0), (0.0,), (0.0, float("nan")), (True, 2.0), (-1e39, 1e39)):
        with pytest.raises(ValueError, match=r"intensity_range must be None .* a_min < a_max"):
            ScanEncoder(spatial_size=(8, 8, 8), intensity_range=bad).check_settings()
    with pytest.raises(ValueError, match=r"'intensity_range' parameter .* array-like"):
        ScanEncoder(spatial_size=(8, 8, 8), intensity_range="0,1").check_settings()
    window = np.array([-1000, 400])  # a window computed with numpy
    ScanEncoder(spatial_size=(8, 8, 8), intensity_range=window).check_settings()
    # A model saved before the parameter existed lacks the attribute: percentiles, as then.
    enc = ScanEncoder(spatial_size=(8, 8, 8))
    del enc.intensity_range
    assert enc.get_params()["intensity_range"] is None


def test_a_drill_down_hands_masked_volumes_back_in_the_window_s_units():
    """A masked volume goes back to the encoder in the units it reads: with a CT window,
    the volume with every block kept encodes as the original, and the same volume in other
    units with the window scaled alike gives the same features for every masking."""
    from toolkit.explain import ScanBlocks

    ct = np.full((16, 16, 16), -1000.0, np.float32)
    ct[2:14, 2:14, 2:14] = 40.0
    ct[4:8, 4:8, 4:8] = 300.0  # a lesion in block z1y1x1
    enc = ScanEncoder(spatial_size=(16, 16, 16), intensity_range=(-1000, 400), progress=False)
    enc.fit([ct])
    masker = ScanBlocks((2, 2, 2), subdivide=2, fill="blur")
    parts = masker.split(ct, enc)
    full = masker.mask(parts, np.ones(64, bool))
    np.testing.assert_allclose(enc.read_item(full), enc.read_item(ct), atol=1e-5)
    np.testing.assert_allclose(enc.transform([full]), enc.transform([ct]), rtol=1e-5, atol=1e-5)
    # the same scan in units 1000x larger, the window too: the same masked features
    big = ScanEncoder(spatial_size=(16, 16, 16), intensity_range=(-1e6, 4e5), progress=False)
    big.fit([ct * 1000])
    big_parts = masker.split(ct * 1000, big)
    keep = np.random.default_rng(0).random(64) < 0.5
    np.testing.assert_allclose(
        big.transform([masker.mask(big_parts, keep)]),
        enc.transform([masker.mask(parts, keep)]),
        rtol=1e-4,
        atol=1e-4,
    )
    lesion = parts.labels.index("z1y1x1")
    no_lesion = np.ones(64, bool)
    no_lesion[lesion] = False
    assert enc.read_item(ct)[4:8, 4:8, 4:8].min() > 0.9  # (300 + 1000) / 1400
    assert enc.read_item(masker.mask(parts, no_lesion))[4:8, 4:8, 4:8].max() < 0.85  # blurred
