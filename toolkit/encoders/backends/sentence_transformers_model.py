"""Text backend ``"sentence-transformers"``: a sentence-transformers model loaded offline
from a folder, a cached hub id, or the 'embed' extra's all-MiniLM-L6-v2 (``model=None``)."""

from __future__ import annotations

import numpy as np

from toolkit._utils import resolve_device
from toolkit.encoders.backends import hub
from toolkit.encoders.backends.base import Backend


class SentenceTransformers(Backend):
    """``SentenceTransformer(model)``'s sentence embeddings (normalized with ``normalize``)."""

    name = "sentence-transformers"
    parameters = ("model", "normalize")
    weight_parameters = ("model",)
    named_model = True
    feature_prefix = "text_emb"

    def example(self, folder) -> dict:
        from sentence_transformers import SentenceTransformer, models

        from toolkit.encoders.backends.hf_transformers import tiny_bert

        word = models.Transformer(tiny_bert(folder), max_seq_length=16)
        pooling = models.Pooling(word.get_word_embedding_dimension())
        SentenceTransformer(modules=[word, pooling], device="cpu").save(
            f"{folder}/sbert", create_model_card=False
        )
        return {"model": f"{folder}/sbert", "device": "cpu"}

    def fit(self, encoder, decoded) -> None:
        from sentence_transformers import SentenceTransformer

        location = (
            hub.default_sentence_model()
            if encoder.model is None
            else hub.check_model_location(encoder.model)
        )
        encoder.device_ = resolve_device(encoder.device)
        hub.check_offline(location, self.hub_candidates(location))  # no hub kernel
        with hub.loading(location, self.name):
            encoder.model_ = SentenceTransformer(
                location, device=str(encoder.device_), local_files_only=True,
                trust_remote_code=False,
            )  # fmt: skip
        hub.check_no_hub_kernels(encoder.model_)
        dim_getter = (
            getattr(encoder.model_, "get_embedding_dimension", None)
            or encoder.model_.get_sentence_embedding_dimension
        )
        encoder.n_features_out_ = int(dim_getter())

    def encode(self, encoder, batch: list) -> np.ndarray:
        with hub.rust_panics(encoder.model or "the default model", "tokenizing"):
            return encoder.model_.encode(
                batch,
                batch_size=encoder._batch_items(),
                show_progress_bar=False,
                convert_to_numpy=True,
                normalize_embeddings=encoder.normalize,
            )

    def save_weights(self, encoder, folder) -> dict[str, str]:
        # no model card: writing one looks the base model up on the hub
        encoder.model_.save(str(folder), safe_serialization=True, create_model_card=False)
        return {"model": "."}

    def default_model(self) -> str | None:
        return hub.default_sentence_model()

    def hub_candidates(self, repo_id: str) -> list[str]:
        # sentence-transformers resolves a bare name under its own organisation too
        return [repo_id] if "/" in repo_id else [repo_id, f"sentence-transformers/{repo_id}"]
