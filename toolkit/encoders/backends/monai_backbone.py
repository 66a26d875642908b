"""Scan backend ``"monai"``: a MONAI network with the user's state dict (frozen, or
fine-tuned on the labels with ``fine_tune``)."""

from __future__ import annotations

import numpy as np

from toolkit.encoders.backends.base import FETCHING_KEY, TorchBackbone
from toolkit.io.scan import quiet_monai, resize_and_scale

#: ``model_kwargs`` of a network built without them: one 3-D input channel.
DEFAULT_MONAI_KWARGS = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2}

#: MONAI networks never built: they fetch weights whatever their arguments say
#: (``Transchex`` loads a BERT from the hub, ``TorchVisionFCModel`` builds a torchvision
#: model whose own defaults may download a backbone; use backend="torchvision" for those).
UNSAFE_MONAI_NETWORKS = frozenset({"Transchex", "TorchVisionFCModel"})

_ARCHITECTURES: dict = {}  # backend class -> the networks it builds (computed once)

# Arguments of monai.networks.nets that only shape the network (numbers, flags, text,
# tuples of them); never pretrained, pretrained_url, weights, backbone, progress, filename
# or path_or_repo_id.
_MONAI_INERT = """
act act_name acti_type activation add_cross_attention adn_ordering adv_prop align_corners
arch_code attention_levels attention_probs_dropout_prob attn_drop_rate attn_layers_depth
attn_layers_dim attn_layers_heads bias bias_downsample block_config block_inplanes
blocks_args_str blocks_bottleneck blocks_down blocks_up bn_size bottleneck_expansion_ratio
channel_matching channel_mul channels chunk_size_feed_forward classes classification
commitment_cost concat_skip conditioning_embedding_in_channels
conditioning_embedding_num_channels conv1_t_size conv1_t_stride conv_block cross_attention_dim
ddp_sync decay decode_channels decoder_bias decoder_channels decoder_expansion_ratio
decoder_hidden_size decoder_mlp_dim decoder_num_heads decoder_num_layers decoder_padding
decoder_pos_embed_type deconv_chns deep_supervision deep_supr_num depth depth_coefficient
depth_divisor depths dilation dim dim_head downsample downsample_kernel_size
downsample_parameters drop_connect_rate drop_out drop_rate dropout dropout_cattn dropout_dim
dropout_path_rate dropout_prob dropout_prob_down dropout_prob_up dropout_rate dsdepth
emb_dropout_rate embedding_dim embedding_dropout_rate embedding_init encode_channels
encode_kernel_sizes encoder_expansion_ratio epsilon expand_ratio extract_levels feature_size
features feed_forward filters final_conv_act final_conv_channels global_resp_norm
gradient_checkpointing groups growth_rate half_res hidden_act hidden_channels
hidden_dropout_prob hidden_size hyena_fft_padding hyena_grid_type hyena_kernel_layers
hyena_kernel_mlp_dim hyena_kernel_size hyena_l_cache hyena_mask_max_attenuation hyena_omega_0
hyena_short_conv_fft_chunks hyena_stages hyena_use_chunked_fft hyena_use_fft_short_conv id_skip
image_size img_size in_channels in_planes in_shape include_fc init_features init_filters
initializer_range inplanes input_3x3 input_filters input_image_size input_shape
integration_steps inter_channels inter_dilations intermediate_size interp_mode is_decoder
is_pad is_vae kernel_c kernel_size kernels label_nc last_act last_conv_kernel_size
latent_channels latent_shape latent_size layer_norm_eps layer_params layers masking_ratio
max_position_embeddings max_seq_len mil_mode minimum_size_im mlp_dim mlp_ratio mode
model_name model_type n_input_channels no_max_pool norm norm_eps norm_name norm_num_groups
norm_type normalize np_out_channels num_attention_heads num_blocks num_channel_initial
num_channels num_class_embeds num_classes num_d num_depths num_embeddings num_filters
num_groups num_head_channels num_heads num_hidden_layers num_inter_units num_layers
num_layers_d num_repeat num_res_blocks num_res_channels num_res_layers num_res_units
num_tokens out_activation out_channels out_classes out_kernel_initializer out_shape
output_act output_filters pad_token_id padding patch_norm patch_size planes pool pooling
pos_embed_type position_embedding_type post_activation pre_conv proj_type psp_block_num
qkv_bias reduction res_block resblock_updown resolution save_attn save_theta se_block
se_ratio shortcut_type spade_intermediate_channels spatial_dims start_shape stride
stride_conv stride_pool strides token_dropout_prob trans_bias trans_blocks trans_dropout
transformer_num_layers type_vocab_size unet_out_channels up_kernel_size upcast_attention
upsample upsample_kernel_size upsample_mode upsample_parameters upsampling_mode
use_additive_sampling use_checkpoint use_checkpointing use_combined_linear use_conv
use_conv_final use_convtranspose use_downsample use_flash_attention use_hyena use_maxpool
use_mean_at_inference use_residual_connection use_sigmoid use_v2 vae_default_std
vae_estimate_std vae_nz visual_output vocab_size widen_factor width_coefficient window_size
with_conditioning with_cross_attention with_decoder_nonlocal_attn with_encoder_nonlocal_attn
z_dim
"""


class Monai(TorchBackbone):
    """``monai.networks.nets.<model>(**model_kwargs)`` with the state dict of ``weights``;
    volumes resized to ``spatial_size`` and scaled on the network's device."""

    name = "monai"
    feature_prefix = "scan_emb"
    inert_kwargs = frozenset(_MONAI_INERT.split())
    # Several networks download ImageNet or MedicalNet weights by default (EfficientNetBN,
    # ResNetFeatures, MILModel: pretrained=True); HoVerNet fetches pretrained_url.
    offline_kwargs = {"pretrained": False, "pretrained_url": None, "weights": None,
                      "progress": False}  # fmt: skip

    def example(self, folder) -> dict:
        import torch
        from monai.networks.nets import DenseNet

        kwargs = dict(
            spatial_dims=3, in_channels=1, out_channels=2, init_features=8, growth_rate=4,
            block_config=(2, 2), bn_size=2,
        )  # fmt: skip
        torch.manual_seed(0)
        torch.save(DenseNet(**kwargs).state_dict(), f"{folder}/monai.pt")
        return {
            "model": "DenseNet", "model_kwargs": kwargs, "weights": f"{folder}/monai.pt",
            "spatial_size": (16, 16, 16), "device": "cpu",
        }  # fmt: skip

    def architectures(self) -> set[str]:
        """The torch networks of ``monai.networks.nets`` that can be built offline: not
        :data:`UNSAFE_MONAI_NETWORKS`, nor any whose constructor has another argument that
        names weights, files or the hub with a default that would fetch them."""
        if type(self) in _ARCHITECTURES:
            return set(_ARCHITECTURES[type(self)])
        import inspect

        import torch

        with quiet_monai():
            from monai.networks import nets

        names = set(getattr(nets, "__all__", ())) or set(dir(nets))
        out = set()
        for n in names - UNSAFE_MONAI_NETWORKS:
            cls = getattr(nets, n, None)
            if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
                continue
            try:
                params = inspect.signature(cls).parameters.values()
            except (TypeError, ValueError):  # pragma: no cover
                continue
            fetching = [
                p.name
                for p in params
                if FETCHING_KEY.search(p.name)
                and p.name not in self.inert_kwargs
                and p.name not in self.offline_kwargs
                and p.default not in (None, False, inspect.Parameter.empty)
            ]
            if not fetching:
                out.add(n)
        _ARCHITECTURES[type(self)] = frozenset(out)  # 0.1 s to compute: once per process
        return out

    def network(self, encoder):
        if not encoder.model:
            raise ValueError(
                "backend='monai' needs model=<monai.networks.nets name>, e.g. 'DenseNet121'"
            )
        with quiet_monai():
            from monai.networks import nets

            if not isinstance(encoder.model, str) or not hasattr(nets, encoder.model):
                raise ValueError(
                    f"unknown MONAI network '{encoder.model}' (see monai.networks.nets)"
                )
            if encoder.model not in self.architectures():
                raise ValueError(
                    f"MONAI network '{encoder.model}' is not built by the toolkit: it fetches "
                    "weights from the network or the hub whatever its arguments say (or is "
                    "not a torch network); choose another architecture, or the torchvision "
                    "backend of ImageEncoder"
                )
            cls = getattr(nets, encoder.model)
            kwargs = self.constructor_kwargs(encoder, cls, defaults=DEFAULT_MONAI_KWARGS)
            return cls(**kwargs)

    def probe(self, encoder):
        import torch

        return torch.zeros(1, 1, *encoder.spatial_size, device=encoder.device_)

    def fit(self, encoder, decoded) -> None:
        check_spatial_size(self, encoder)
        super().fit(encoder, decoded)

    def fine_tune_network(self, encoder, n_out: int):
        check_spatial_size(self, encoder)
        return super().fine_tune_network(encoder, n_out)

    def auto_cost(self, encoder):
        return ("voxels", int(np.prod(encoder.spatial_size)))

    def finish_reads(self, encoder, items: list) -> list:
        # Same-shape volumes resized and intensity-scaled together on the network's device,
        # where the tensors stay.
        return resize_and_scale(
            items,
            spatial_size=tuple(encoder.spatial_size),
            device=getattr(encoder, "device_", None),
            intensity_range=encoder.intensity_range,
        )

    def stack(self, encoder, batch: list):
        import torch

        return torch.stack(batch)[:, None]


def _runs(net, shape) -> str | None:
    """None when ``net`` takes a (1, 1, *shape) input (shapes only, on the meta device),
    else the first line of its error."""
    import torch

    try:
        with torch.no_grad():
            net(torch.empty(1, 1, *shape, device="meta"))
    except (RuntimeError, ValueError, IndexError, AssertionError) as exc:
        return (str(exc).splitlines() or [type(exc).__name__])[0][:200]
    return None


def check_spatial_size(backend: Monai, encoder, largest: int = 1024) -> None:
    """Refuse a ``spatial_size`` the network cannot take (smaller than its kernels and
    downsampling allow), naming the smallest cube side it takes, before any weights are
    loaded or volumes resized: the shapes are traced on torch's meta device (no memory,
    no compute), as MONAI raises nothing clearer than a pooling error at fit."""
    import torch

    size = tuple(int(n) for n in encoder.spatial_size)
    with torch.device("meta"):
        net = backend.build_network(encoder).eval()
    error = _runs(net, size)
    if error is None:
        return
    side = 1
    while side <= largest and _runs(net, (side,) * 3) is not None:
        side *= 2
    if side > largest:
        need = f"no cube up to {largest} voxels a side works either"
    else:
        low = side // 2  # fails (or 0)
        while side - low > 1:
            mid = (low + side) // 2
            low, side = (low, mid) if _runs(net, (mid,) * 3) is None else (mid, side)
        need = f"the smallest cube it takes is ({side}, {side}, {side})"
    raise ValueError(
        f"ScanEncoder(spatial_size={size}) is too small for MONAI '{encoder.model}' with "
        f"model_kwargs={encoder.model_kwargs}: its convolutions and downsampling fail on it "
        f"({error}); {need}; pass a larger spatial_size (or a network with less "
        "downsampling)"
    )
