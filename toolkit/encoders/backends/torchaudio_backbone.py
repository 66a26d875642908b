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
    # Arguments of torchaudio.models' factories that only shape the network (its factories
    # download nothing; the pipelines' bundles, which do, are not reachable from here).
    inert_kwargs = frozenset(
        """
        activation att_dim attention_dropout attention_hidden_dim
        attention_location_kernel_size attention_location_n_filter attention_rnn_dim
        audio_channels aux aux_num_out blank channels chunk_size chunk_stride context
        context_enc convolution_first d_model dconv_attn dconv_comp dconv_depth dconv_init
        dconv_lstm decoder_dropout decoder_early_stopping decoder_max_step decoder_rnn_dim
        depth depthwise_conv_kernel_size dprnn dropout emb_scale emb_smooth enc_kernel_size
        enc_num_feats encoder_attention_dropout encoder_dropout encoder_embed_dim
        encoder_embedding_dim encoder_ff_interm_dropout encoder_ff_interm_features
        encoder_kernel_size encoder_layer_drop encoder_layer_norm_first encoder_max_distance
        encoder_n_convolution encoder_num_buckets encoder_num_heads encoder_num_layers
        encoder_pos_conv_groups encoder_pos_conv_kernel encoder_projection_dropout
        encoding_dim extractor_conv_bias extractor_conv_layer_config extractor_mode feat_dim
        feature_grad_mult ffn_dim final_dim freq_emb gate_threshold growth hidden_dim
        hop_length input_dim input_type kernel_size left_context_length lstm_dropout
        lstm_layer_norm lstm_layer_norm_epsilon mask_channel_length mask_channel_min_space
        mask_channel_other mask_channel_prob mask_channel_selection mask_length
        mask_min_space mask_other mask_padding mask_prob mask_selection max_memory_size
        msk_activate msk_kernel_size msk_num_feats msk_num_hidden_feats msk_num_layers
        msk_num_stacks n_class n_classes n_fc n_feature n_frames_per_step n_freq n_hidden
        n_mels n_output n_res_block n_rnn n_symbol negative_inf nfft nhead
        no_mask_channel_overlap no_mask_overlap norm_groups norm_starts num_blocks
        num_classes num_features num_heads num_layers num_lstm_layers num_sources
        num_symbols postnet_embedding_dim postnet_kernel_size postnet_n_convolution
        prenet_dim proj_dim right_context_length rnn_type segment_length skip_masked
        skip_nomask sources stride symbol_embedding_dim tanh_on_mem temperature
        time_reduction_input_dim time_reduction_stride time_stride transformer_activation
        transformer_dropout transformer_ffn_dim transformer_left_context_length
        transformer_max_memory_size transformer_num_heads transformer_num_layers
        transformer_tanh_on_mem transformer_weight_init_scale_strategy upsample_scales
        use_group_norm weight_init_scale_strategy win_len
        """.split()
    )

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
        factory = getattr(torchaudio.models, str(encoder.model))
        return factory(**self.constructor_kwargs(encoder, factory))

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
