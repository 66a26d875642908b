"""Shared fixtures: offline hub, real-data location, small deterministic inputs."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import matplotlib
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# One intra-op thread per test process (the Makefile sets the same for notebooks and
# doctests): test workers already fill the cores, and a second thread only waits at barriers.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]

#: Test files that take longest (measured with ``--junitxml``), handed to the test workers
#: first after the notebooks: with ``--dist loadfile`` a long file that starts last ends the
#: run on one worker while the other waits. Order only; a stale entry costs time, not tests.
LONGEST_FIRST = (
    "tests/study/test_study.py",
    "tests/estimators/test_estimators_sklearn.py",
    "tests/distributed/test_dask.py",
    "tests/explain/test_modality.py",
    "tests/estimators/test_estimators.py",
    "tests/persistence/test_persistence.py",
    "tests/fusion/test_neural.py",
    "tests/study/test_report_explanations.py",
)


def pytest_collection_modifyitems(session, config, items):
    """Notebooks first, then :data:`LONGEST_FIRST`, then the rest in collection order (the
    Makefile passes ``--no-loadscope-reorder`` so that pytest-xdist keeps this order)."""

    def rank(item) -> int:
        path = item.nodeid.split("::", 1)[0]
        if path.startswith("notebooks/"):
            return 0
        return 1 + LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST) + 1

    items.sort(key=rank)  # stable: collection order within a rank


def data_dir() -> Path | None:
    """TOOLKIT_DATA_DIR, else ../shared/data beside the checkout; None when absent."""
    env = os.environ.get("TOOLKIT_DATA_DIR")
    for candidate in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data"]:
        if candidate.is_dir():
            return candidate
    return None


@pytest.fixture(scope="session")
def real_data() -> Path:
    path = data_dir()
    if path is None:
        pytest.skip("real data folder absent: set TOOLKIT_DATA_DIR or provide ../shared/data")
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A tiny random BERT and its WordPiece tokenizer saved with save_pretrained."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_bert")
    corpus = ["the film was good", "the plot was bad", "not great at all", "a lovely story"] * 5
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(
        corpus, trainers.WordPieceTrainer(vocab_size=80, special_tokens=special)
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]",
    )  # fmt: skip
    fast.save_pretrained(folder)
    import torch

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(fast), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64,
    )  # fmt: skip
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_wav2vec2(tmp_path_factory) -> Path:
    """A tiny random wav2vec 2.0 model and feature extractor saved with save_pretrained."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    folder = tmp_path_factory.mktemp("tiny_w2v")
    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2, num_feat_extract_layers=2,
    )  # fmt: skip
    Wav2Vec2Model(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=16000).save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_wav2vec2_kwargs() -> dict:
    """Arguments of a tiny torchaudio ``wav2vec2_model`` (16-d, one layer) for local tests."""
    return dict(
        extractor_mode="group_norm", extractor_conv_layer_config=[(8, 10, 5), (8, 3, 2)],
        extractor_conv_bias=False, encoder_embed_dim=16, encoder_projection_dropout=0.0,
        encoder_pos_conv_kernel=8, encoder_pos_conv_groups=2, encoder_num_layers=1,
        encoder_num_heads=2, encoder_attention_dropout=0.0, encoder_ff_interm_features=32,
        encoder_ff_interm_dropout=0.0, encoder_dropout=0.0, encoder_layer_norm_first=False,
        encoder_layer_drop=0.0, aux_num_out=None,
    )  # fmt: skip


@pytest.fixture
def deadline():
    """Fail (instead of hanging) if a reader blocks, e.g. by opening a FIFO it should have
    refused: SIGALRM after 10 s."""

    def _alarm(signum, frame):
        raise TimeoutError("the reader blocked: it opened something it should have refused")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)
