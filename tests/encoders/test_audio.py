"""AudioEncoder: MFCC/prosody statistics and the pretrained backends."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit import AudioEncoder
from toolkit.exceptions import ReadError
from toolkit.io import read_audio


def _tone(freq, sr=8000, seconds=0.5, amp=0.5):
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr


def test_statistics_shape_mask_names_and_determinism():
    clips = [_tone(200), None, _tone(300, sr=16000)]
    enc = AudioEncoder()
    block, available = enc.fit(clips).encode(clips)
    assert block.shape == (3, 131) and block.dtype == np.float32
    assert available.tolist() == [True, False, True]
    assert np.isfinite(block[available]).all()
    names = list(enc.get_feature_names_out())
    assert len(names) == 131 and names[-6] == "pitch_mean_log2"
    np.testing.assert_array_equal(
        block[available], AudioEncoder().fit(clips).transform(clips)[available]
    )


def test_very_short_clips_are_encoded():
    clips = [_tone(200, seconds=0.05), _tone(200, seconds=0.2), (np.zeros(1, np.float32), 8000)]
    block = AudioEncoder().fit(clips).transform(clips)
    assert block.shape == (3, 131) and np.isfinite(block).all()


def test_pitch_statistic_tracks_the_tone():
    enc = AudioEncoder().fit([_tone(150)])
    names = list(enc.get_feature_names_out())
    low, high = enc.transform([_tone(150), _tone(300)])
    i = names.index("pitch_mean_log2")
    assert high[i] - low[i] == pytest.approx(1.0, abs=0.15)  # one octave apart


def test_level_normalisation_makes_loudness_irrelevant_to_mfcc():
    enc = AudioEncoder().fit([_tone(200)])
    quiet, loud = enc.transform([_tone(200, amp=0.05), _tone(200, amp=0.5)])
    np.testing.assert_allclose(quiet[:60], loud[:60], atol=1e-3)


def test_real_fsdd_recordings(real_data):
    files = sorted((real_data / "fsdd").glob("*_jackson_0.wav"))
    assert len(files) == 10
    block = AudioEncoder().fit(files).transform(files)
    assert block.shape == (10, 131) and np.isfinite(block).all()


def test_corrupt_wav_error_names_file_and_row(tmp_path):
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + b"\x00" * 10)
    with pytest.raises(
        ReadError, match=r"row 1 of the column: audio file '.*corrupt\.wav' could not be decoded"
    ):
        AudioEncoder().fit_transform([_tone(200), str(bad)])


def test_on_error_missing(tmp_path):
    items = [_tone(200), str(tmp_path / "absent.wav")]
    with pytest.warns(UserWarning, match="absent.wav' does not exist"):
        _, available = AudioEncoder(on_error="missing").fit(items).encode(items)
    assert available.tolist() == [True, False]


def test_transformers_backend_local_wav2vec2(tiny_wav2vec2):
    clips = [_tone(200, sr=16000), _tone(250, sr=8000), None]
    enc = AudioEncoder(backend="transformers", model=str(tiny_wav2vec2), device="cpu")
    block, available = enc.fit(clips).encode(clips)
    assert enc.rate_ == 16000
    assert block.shape == (3, 16) and available.tolist() == [True, True, False]
    assert np.isfinite(block[:2]).all()
    assert not np.allclose(block[0], block[1])


def test_torchaudio_backend_with_state_dict(tmp_path, tiny_wav2vec2_kwargs):
    import torch
    import torchaudio

    kwargs = tiny_wav2vec2_kwargs
    torch.manual_seed(0)
    net = torchaudio.models.wav2vec2_model(**kwargs)
    path = tmp_path / "w2v.pt"
    torch.save(net.state_dict(), path)
    enc = AudioEncoder(
        backend="torchaudio",
        model="wav2vec2_model",
        model_kwargs=kwargs,
        weights=path,
        device="cpu",
    )
    block = enc.fit([_tone(200)]).transform([_tone(200), _tone(400)])
    assert block.shape == (2, 16) and np.isfinite(block).all()
    # The saved weights were loaded: the original model's last layer, mean-pooled, agrees.
    wave = read_audio(_tone(200), sample_rate=16000)[0]
    with torch.inference_mode():
        expected = (
            net.eval().extract_features(torch.from_numpy(wave)[None])[0][-1].mean(dim=1)[0].numpy()
        )
    np.testing.assert_allclose(block[0], expected, atol=1e-5)
    assert not np.allclose(block[0], block[1])


def test_torchaudio_backend_unknown_model():
    with pytest.raises(ValueError, match="torchaudio.models factory name"):
        AudioEncoder(backend="torchaudio", model="nope", weights="x.pt").fit([_tone(100)])


def test_max_seconds_is_validated_and_passed_to_the_reader(tmp_path):
    import soundfile as sf
    from sklearn.utils._param_validation import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="max_seconds"):
        AudioEncoder(max_seconds=0).fit([_tone(200)])
    with pytest.raises(InvalidParameterError, match="sample_rate"):
        AudioEncoder(sample_rate=1_000_000).fit([_tone(200)])
    path = tmp_path / "two_seconds.wav"
    sf.write(path, _tone(200, seconds=2.0)[0], 8000)
    with pytest.raises(ReadError, match=r"row 0 of the column: .*max_seconds=1\.5 s limit"):
        AudioEncoder(max_seconds=1.5).fit_transform([str(path)])
    assert AudioEncoder(max_seconds=2.5).fit_transform([str(path)]).shape == (1, 131)


def test_awkward_rate_clips_are_encoded_like_nearby_rates():
    # 44,101 Hz has gcd 1 with 16,000 Hz: resampling uses bounded factors, and the
    # statistics agree with those of the same tone at 44,100 Hz.
    enc = AudioEncoder().fit([_tone(200)])
    awkward, common = enc.transform([_tone(200, sr=44_101), _tone(200, sr=44_100)])
    names = list(enc.get_feature_names_out())
    i = names.index("pitch_mean_log2")
    assert awkward[i] == pytest.approx(common[i], abs=0.01)
    np.testing.assert_allclose(awkward[:60], common[:60], atol=0.05)


def test_build_network_on_meta_device_matches_the_real_network(tiny_wav2vec2_kwargs):
    import torch

    kwargs = tiny_wav2vec2_kwargs
    enc = AudioEncoder(backend="torchaudio", model="wav2vec2_model", model_kwargs=kwargs)
    with torch.device("meta"):
        meta = enc.build_network()
    real = enc.build_network()
    assert all(t.is_meta for t in meta.state_dict().values())
    assert not any(t.is_meta for t in real.state_dict().values())
    assert {k: tuple(v.shape) for k, v in meta.state_dict().items()} == {
        k: tuple(v.shape) for k, v in real.state_dict().items()
    }
    with pytest.raises(ValueError, match="backend='mfcc'.*needs backend='torchaudio'"):
        AudioEncoder().build_network()
    with pytest.raises(ValueError, match="torchaudio.models factory name.*got 'nope'"):
        AudioEncoder(backend="torchaudio", model="nope").build_network()


# -- batched statistics ------------------------------------------------------------------


def _voice(seconds, seed, sr=16000):
    """A voiced-like clip: a 120 +- 30 Hz glide with harmonics, an amplitude envelope and
    a little noise (fixed seed)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    phase = 2 * np.pi * np.cumsum(120 + 30 * np.sin(2 * np.pi * 3 * t)) / sr
    wave = (np.sin(phase) + 0.5 * np.sin(2 * phase)) * (0.3 + np.sin(2 * np.pi * 1.5 * t) ** 2)
    return (0.4 * wave + 0.01 * rng.normal(size=t.size)).astype(np.float32)


def test_batched_statistics_match_one_clip_at_a_time():
    from toolkit.encoders.audio import audio_statistics_batch

    # 0.03 s (shorter than the 0.1 s floor) to 1.5 s in one batch: the short clips are
    # padded to 1.5 s, and padding must not leak into any statistic.
    waves = [_voice(s, i) for i, s in enumerate([0.03, 0.2, 0.37, 1.5, 0.9])]
    batched = audio_statistics_batch(waves, 16000, 20, 3)
    alone = np.stack([audio_statistics_batch([w], 16000, 20, 3)[0] for w in waves])
    assert batched.shape == (5, 131) and np.isfinite(batched).all()
    # Stated tolerance: float32 rounding of reductions over padded rows (measured <= 2e-5).
    np.testing.assert_allclose(batched, alone, rtol=1e-4, atol=1e-4)


def test_length_grouped_batches_keep_input_order(monkeypatch):
    from toolkit.encoders.backends import mfcc as audio_module

    waves = [_voice(s, i) for i, s in enumerate([1.2, 0.1, 0.6, 0.3, 0.9])]
    whole = audio_module.audio_statistics(waves, 16000, 20, 3)
    # At most ~0.5 s of padded samples per batch: the clips run in four length groups.
    monkeypatch.setattr(audio_module, "_BATCH_SAMPLES", 8000)
    grouped = audio_module.audio_statistics(waves, 16000, 20, 3)
    np.testing.assert_allclose(grouped, whole, rtol=1e-4, atol=1e-4)
    assert not np.allclose(grouped[0], grouped[1])  # rows are not shuffled or repeated


def test_spectral_statistics_are_those_of_torchaudio_mfcc():
    import torch
    import torchaudio

    from toolkit.encoders.audio import audio_statistics_batch

    wave = _voice(0.8, 0)
    x = wave - wave.mean()
    x = x / (np.abs(x).max() + 1e-8)
    mfcc = torchaudio.transforms.MFCC(
        16000, 20, melkwargs={"n_fft": 512, "win_length": 400, "hop_length": 160, "n_mels": 40}
    )(torch.from_numpy(x))
    d1 = torchaudio.functional.compute_deltas(mfcc[None])[0]
    d2 = torchaudio.functional.compute_deltas(d1[None])[0]
    centred = mfcc - mfcc.mean(1, keepdim=True)
    segments = torch.cat([s.mean(1) for s in torch.tensor_split(centred, 3, dim=1)])
    expected = torch.cat([segments, mfcc.std(1), d1.std(1), d2.std(1)]).numpy()
    # Computed in a batch with a longer clip (padding), against torchaudio on the clip alone.
    feats = audio_statistics_batch([wave, _voice(1.4, 1)], 16000, 20, 3)[0]
    np.testing.assert_allclose(feats[:120], expected, rtol=1e-3, atol=2e-3)


def test_batched_pitch_track_is_torchaudios_nccf_tracker():
    import torch
    import torchaudio

    from toolkit.encoders.backends.mfcc import _pitch_track

    short, wave = _voice(0.2, 1), _voice(1.0, 0)
    x = torch.zeros(2, len(wave))
    x[0, : len(short)], x[1] = torch.from_numpy(short), torch.from_numpy(wave)
    pitch, valid = _pitch_track(x, torch.tensor([len(short), len(wave)]), 16000)
    for row, clip in enumerate([short, wave]):
        # The previous per-clip computation: zero-padded to 0.35 s, torchaudio's tracker.
        padded = np.pad(clip, (0, max(0, 5600 - len(clip))))
        ref = torchaudio.functional.detect_pitch_frequency(
            torch.from_numpy(padded)[None], 16000, 0.01, 30, 60, 500
        )[0]
        assert int(valid[row].sum()) == len(ref) == (20 if row == 0 else 85)
        np.testing.assert_allclose(pitch[row, : len(ref)].numpy(), ref.numpy(), rtol=1e-6)
    assert 90 < float(pitch[1, :85].median()) < 160  # the 120 +- 30 Hz glide


def test_silence_has_defined_features():
    enc = AudioEncoder().fit([_tone(200)])
    block = enc.transform([(np.zeros(8000, np.float32), 8000), (np.zeros(3, np.float32), 8000)])
    assert np.isfinite(block).all()
    names = list(enc.get_feature_names_out())
    for row in block:
        feats = dict(zip(names, row, strict=True))
        assert feats["energy_mean_db"] == pytest.approx(-100.0, abs=1e-4)
        assert feats["energy_std_db"] == 0.0 and feats["energy_range_db"] == 0.0
        assert feats["voiced_ratio"] == 1.0 and feats["zcr_mean"] == 0.0
        np.testing.assert_allclose(row[60:120], 0.0, atol=1e-3)  # no spectral variation
    assert dict(zip(names, block[0], strict=True))["log_duration"] == pytest.approx(
        np.log(1.0 + 1e-3)
    )


def test_encoder_restores_torch_threads():
    import torch

    before = torch.get_num_threads()
    AudioEncoder().fit_transform([_tone(200)])
    assert torch.get_num_threads() == before
