"""Audio backend ``"torchaudio"``: a torchaudio model factory with the user's state dict,
its last transformer layer's features mean-pooled over time."""

from __future__ import annotations

import numpy as np

from toolkit._utils import resolve_device
from toolkit.encoders.backends.base import TorchBackbone


class Torchaudio(TorchBackbone):
    """``torchaudio.models.<model>(**model_kwargs)`` with the state dict of ``weights``
    (frozen; clips at ``sample_rate``)."""

    name = "torchaudio"
    parameters = ("model", "weights", "model_kwargs", "sample_rate")
    can_fine_tune = False
    feature_prefix = "audio_emb"

    def example(self, folder) -> dict:
        import torch
        import torchaudio

        kwargs = dict(
            extractor_mode="group_norm", extractor_conv_layer_config=[(8, 10, 5), (8, 3, 2)],
            extractor_conv_bias=False, encoder_embed_dim=16, encoder_projection_dropout=0.0,
            encoder_pos_conv_kernel=8, encoder_pos_conv_groups=2, encoder_num_layers=1,
            encoder_num_heads=2, encoder_attention_dropout=0.0, encoder_ff_interm_features=32,
            encoder_ff_interm_dropout=0.0, encoder_dropout=0.0, encoder_layer_norm_first=False,
            encoder_layer_drop=0.0, aux_num_out=None,
        )  # fmt: skip
        torch.manual_seed(0)
        torch.save(torchaudio.models.wav2vec2_model(**kwargs).state_dict(), f"{folder}/ta.pt")
        return {
            "model": "wav2vec2_model", "model_kwargs": kwargs, "weights": f"{folder}/ta.pt",
            "device": "cpu",
        }  # fmt: skip

    def architectures(self) -> set[str]:
        import torchaudio

        return set(getattr(torchaudio.models, "__all__", ()))

    def network(self, encoder):
        import torchaudio

        if not encoder.model or not hasattr(torchaudio.models, str(encoder.model)):
            raise ValueError(
                f"backend='torchaudio' needs model=<torchaudio.models factory name> such as "
                f"'wav2vec2_base' or 'hubert_base', got {encoder.model!r}"
            )
        return getattr(torchaudio.models, str(encoder.model))(**(encoder.model_kwargs or {}))

    def fit(self, encoder, decoded) -> None:
        import torch

        encoder.device_ = resolve_device(encoder.device)
        encoder.model_ = self.load(encoder).to(encoder.device_).eval()
        encoder.rate_ = int(encoder.sample_rate)
        with torch.inference_mode():
            probe = self.embed_one(encoder, np.zeros(encoder.rate_, dtype=np.float32))
        encoder.n_features_out_ = int(probe.shape[0])

    def embed_one(self, encoder, wave: np.ndarray) -> np.ndarray:
        """One clip's last-layer features, mean-pooled over time."""
        import torch

        x = torch.from_numpy(wave)[None].to(encoder.device_)
        hidden = encoder.model_.extract_features(x)[0][-1]
        return hidden.mean(dim=1)[0].float().cpu().numpy()

    def encode(self, encoder, batch: list) -> np.ndarray:
        import torch

        # Clips are embedded one at a time: no padding, so pooling sees only real frames.
        with torch.inference_mode():
            return np.stack([self.embed_one(encoder, w) for w, _ in batch])
