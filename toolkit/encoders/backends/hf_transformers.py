"""Backend ``"transformers"`` (text, audio): a ``transformers`` model loaded offline from a
folder or a cached hub id, mean-pooled over its tokens or frames; it can be fine-tuned on
the labels (``fine_tune``)."""

from __future__ import annotations

from numbers import Integral

import numpy as np
from sklearn.utils._param_validation import Interval

from toolkit._utils import resolve_device
from toolkit.encoders._torch import from_pretrained_checked
from toolkit.encoders.backends import hub
from toolkit.encoders.backends.base import Backend

_FINE_TUNING = (
    "fine_tune", "max_epochs", "patience", "learning_rate", "weight_decay", "dropout",
    "validation_fraction", "random_state", "verbose",
)  # fmt: skip


def tiny_bert(folder) -> str:
    """A tiny random BERT (16-d, one layer) and a WordPiece tokenizer trained on a few
    words, saved with ``save_pretrained`` under ``folder/bert`` (for the examples)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    out = f"{folder}/bert"
    corpus = ["the film was good", "the plot was bad", "not great at all", "a lovely story"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(
        corpus * 5, trainers.WordPieceTrainer(vocab_size=80, special_tokens=special)
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]",
    )  # fmt: skip
    fast.save_pretrained(out)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(fast), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64,
    )  # fmt: skip
    BertModel(config).save_pretrained(out)
    return out


#: Tokens per text of the text transformers backend when ``max_length=None`` (the model's
#: own limit, when lower, applies).
MAX_LENGTH = 256


def model_token_limit(tokenizer, model) -> int | None:
    """The most tokens the model reads: the lower of the tokenizer's ``model_max_length``
    (when set: an unset one reads as about 1e30) and the config's
    ``max_position_embeddings``; None when neither says."""
    limits = [getattr(tokenizer, "model_max_length", None)]
    limits.append(getattr(getattr(model, "config", None), "max_position_embeddings", None))
    known = [int(n) for n in limits if isinstance(n, int | float) and 0 < n < 10**7]
    return min(known) if known else None


def token_limit(encoder, location) -> int:
    """The tokens per text the encoder uses (``max_length``, else :data:`MAX_LENGTH` or
    the model's lower limit); a ``max_length`` above the model's limit is refused (the
    position embeddings would be indexed out of range)."""
    limit = model_token_limit(encoder.tokenizer_, encoder.model_)
    if encoder.max_length is None:
        return MAX_LENGTH if limit is None else min(MAX_LENGTH, limit)
    if limit is not None and encoder.max_length > limit:
        raise ValueError(
            f"TextEncoder(max_length={encoder.max_length}) is above the {limit} tokens the "
            f"model '{location}' reads at most (its tokenizer's model_max_length / config's "
            f"max_position_embeddings); pass max_length<={limit}, or max_length=None for "
            "the model's limit"
        )
    return int(encoder.max_length)


class Transformers(Backend):
    """A ``save_pretrained`` folder (or cached hub id): saved as such with a model."""

    name = "transformers"
    weight_parameters = ("model",)
    can_fine_tune = True
    named_model = True

    def save_weights(self, encoder, folder) -> dict[str, str]:
        encoder.model_.save_pretrained(folder, safe_serialization=True)
        extractor = getattr(encoder, "tokenizer_", None) or encoder.feature_extractor_
        extractor.save_pretrained(folder)
        return {"model": "."}


class TextTransformers(Transformers):
    """AutoModel + AutoTokenizer, mean-pooled over the real tokens, texts tokenized without
    padding in the reading step and embedded in token-length-sorted batches."""

    parameters = ("model", "max_length", "normalize", "trainable_layers", *_FINE_TUNING)
    constraints = {"max_length": [Interval(Integral, 1, None, closed="left"), None]}
    feature_prefix = "text_emb"

    def example(self, folder) -> dict:
        return {"model": tiny_bert(folder), "max_length": 16, "device": "cpu"}

    def fit(self, encoder, decoded) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        location = (
            hub.default_sentence_model()
            if encoder.model is None
            else hub.check_model_location(encoder.model)
        )
        encoder.model_location_ = location
        encoder.device_ = resolve_device(encoder.device)
        hub.check_offline(location)  # no hub kernel, whatever the folder's files say
        with hub.loading(location, self.name):
            encoder.tokenizer_ = AutoTokenizer.from_pretrained(
                location, local_files_only=True, trust_remote_code=False
            )
            encoder.model_ = from_pretrained_checked(
                AutoModel, location, strict=getattr(encoder, "_restoring", False)
            )
        hub.check_no_hub_kernels(encoder.model_)
        encoder.max_length_ = token_limit(encoder, location)
        encoder.model_ = encoder.model_.to(encoder.device_).eval()
        with torch.inference_mode():
            probe = encoder._transformers_embed(["probe"])
        encoder.n_features_out_ = probe.shape[1]

    def finish_reads(self, encoder, texts: list) -> list:
        # A chunk's texts tokenized together (without padding), in the reading step: on a
        # GPU that runs in a background thread, overlapped with the previous chunk.
        if not texts:
            return texts
        with hub.rust_panics(encoder.model_location_, "tokenizing"):
            enc = encoder.tokenizer_(list(texts), truncation=True, max_length=encoder.max_length_)
        keys = list(enc.keys())
        return [{k: enc[k][i] for k in keys} for i in range(len(texts))]

    def auto_cost(self, encoder):
        # Chunks sized for batches of texts at max_length (batches are planned on the
        # actual token lengths when encoding).
        return ("tokens", getattr(encoder, "max_length_", encoder.max_length or MAX_LENGTH))

    def encode(self, encoder, batch: list) -> np.ndarray:
        return encoder._embed_tokens(batch)

    def default_model(self) -> str | None:
        return hub.default_sentence_model()


class AudioTransformers(Transformers):
    """AutoModel + AutoFeatureExtractor at the extractor's sampling rate, mean-pooled over
    each clip's own frames."""

    parameters = ("model", "trainable_layers", *_FINE_TUNING)
    feature_prefix = "audio_emb"

    def example(self, folder) -> dict:
        import torch
        from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

        torch.manual_seed(0)
        config = Wav2Vec2Config(
            hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
            conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=8,
            num_conv_pos_embedding_groups=2, num_feat_extract_layers=2,
        )  # fmt: skip
        Wav2Vec2Model(config).save_pretrained(f"{folder}/wav2vec2")
        Wav2Vec2FeatureExtractor(sampling_rate=16000).save_pretrained(f"{folder}/wav2vec2")
        return {"model": f"{folder}/wav2vec2", "device": "cpu"}

    def fit(self, encoder, decoded) -> None:
        import torch
        from transformers import AutoFeatureExtractor, AutoModel

        encoder.device_ = resolve_device(encoder.device)
        location = hub.check_model_location(encoder.model)
        hub.check_offline(location)  # no hub kernel, whatever the folder's files say
        with hub.hub_offline():
            encoder.feature_extractor_ = AutoFeatureExtractor.from_pretrained(
                location, local_files_only=True, trust_remote_code=False
            )
        encoder.model_ = (
            from_pretrained_checked(
                AutoModel, location, strict=getattr(encoder, "_restoring", False)
            )
            .to(encoder.device_)
            .eval()
        )
        hub.check_no_hub_kernels(encoder.model_)
        encoder.rate_ = int(
            getattr(encoder.feature_extractor_, "sampling_rate", encoder.sample_rate)
        )
        with torch.inference_mode():
            probe = self.embed_one(encoder, np.zeros(encoder.rate_, dtype=np.float32))
        encoder.n_features_out_ = int(probe.shape[0])

    def embed_one(self, encoder, wave: np.ndarray) -> np.ndarray:
        """One clip's mean-pooled last hidden states."""
        inputs = encoder.feature_extractor_(wave, sampling_rate=encoder.rate_, return_tensors="pt")
        inputs = {k: v.to(encoder.device_) for k, v in inputs.items()}
        hidden = encoder.model_(**inputs).last_hidden_state
        return hidden.mean(dim=1)[0].float().cpu().numpy()

    def encode(self, encoder, batch: list) -> np.ndarray:
        import torch

        waves = [w for w, _ in batch]
        if encoder._fine_tuning():
            return encoder._ft_embed(waves)
        if encoder._batches_clips():
            return encoder._embed_batched(waves)
        # Clips are embedded one at a time: no padding, so pooling sees only real frames.
        with torch.inference_mode():
            return np.stack([self.embed_one(encoder, w) for w in waves])

    def check_item(self, encoder, clip) -> None:
        # A clip shorter than the model's feature encoder gives no frame: the model refuses
        # it alone, and a padded batch would pool nothing (zeros).
        frames_of = getattr(
            getattr(encoder, "model_", None), "_get_feat_extract_output_lengths", None
        )
        if frames_of is None:
            return
        import torch

        if int(frames_of(torch.tensor(len(clip[0])))) < 1:
            from toolkit.exceptions import ReadError

            raise ReadError(
                f"clip of {len(clip[0])} samples at {encoder.rate_} Hz is shorter than the "
                "model's feature encoder reads for one frame; pad or drop such clips"
            )

    def auto_cost(self, encoder):
        # Chunks of the budget's worth of one-second clips (forward passes are planned on
        # the clips' actual lengths).
        return ("samples", encoder._target_rate())
