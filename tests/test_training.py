"""The one training loop (toolkit/training.py): known answers of the loop itself, its one
declaration of parameter constraints, and the estimators that train through it."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import toolkit.training as training
from toolkit import Embeddings, ImageEncoder, TextEncoder
from toolkit.encoders import _cnn, _text_finetune
from toolkit.fusion.neural import NeuralFusion
from toolkit.training import (
    MIN_DELTA,
    TRAINING_CONSTRAINTS,
    seeded,
    shuffled_batches,
    train,
    training_constraints,
)

X = torch.linspace(-1, 1, 8).reshape(-1, 1)
Y = 3 * X[:, 0] + 1


def owner(**settings):
    base = {"max_epochs": 20, "patience": 2, "learning_rate": 0.05, "weight_decay": 0.0}
    return SimpleNamespace(**{**base, **settings})


def regression_loss(net):
    def loss(rows):
        return torch.nn.functional.mse_loss(net(X[rows])[:, 0], Y[rows])

    return loss


def all_rows(generator):
    return shuffled_batches(np.arange(8), 4, generator, "cpu")


def test_early_stopping_stops_at_the_right_epoch_and_restores_the_best_state():
    """Scripted validation curve, patience 2: the best epoch is 3 (a later drop smaller than
    MIN_DELTA is no improvement), training stops after epoch 5, epoch 3's weights return."""
    curve = [1.0, 0.8, 0.9, 0.6, 0.6 - MIN_DELTA / 2, 0.7, 0.1, 0.05]
    with seeded(0) as gen:
        net = torch.nn.Linear(1, 1)
    seen = []

    def validation():
        assert not net.training and not torch.is_grad_enabled()
        seen.append(net.weight.detach().clone())
        return curve[len(seen) - 1]

    est = owner()
    out = train(est, net, regression_loss(net), all_rows, generator=gen, device="cpu",
                validation=validation)  # fmt: skip
    assert out is net and not net.training
    assert est.best_epoch_ == 3 and est.n_epochs_ == 6 == len(est.history_)
    assert [r["valid_loss"] for r in est.history_] == curve[:6]
    assert [r["epoch"] for r in est.history_] == list(range(6))
    assert all(set(r) == {"epoch", "train_loss", "valid_loss"} for r in est.history_)
    torch.testing.assert_close(net.weight.detach(), seen[3], rtol=0, atol=0)
    assert not torch.equal(seen[3], seen[5])  # the weights did move after the best epoch
    losses = [r["train_loss"] for r in est.history_]
    assert losses[-1] < losses[0]  # a real fit: the training loss decreased


def test_training_loss_is_the_row_weighted_mean_and_is_monitored_without_validation():
    """Batches of 3 and 1 rows with losses 1 and 5: the epoch's loss is (3 + 5) / 4 = 2; a
    constant loss never improves, so with patience 3 training stops after epoch 3."""
    net = torch.nn.Linear(1, 1)

    def loss(rows):
        return net.weight.sum() * 0 + (1.0 if len(rows) == 3 else 5.0)

    est = owner(patience=3)
    train(est, net, loss, lambda gen: [[0, 1, 2], [3]], generator=torch.Generator(),
          device="cpu")  # fmt: skip
    assert [r["train_loss"] for r in est.history_] == [2.0] * 4
    assert est.best_epoch_ == 0 and est.n_epochs_ == 4
    assert "valid_loss" not in est.history_[0]


def test_tuple_batches_weigh_by_their_rows_and_reach_the_loss_whole():
    net = torch.nn.Linear(1, 1)
    got = []

    def loss(batch):
        got.append(batch)
        rows, scale = batch
        return net.weight.sum() * 0 + scale

    est = owner(max_epochs=1)
    batches = [(torch.arange(3), 1.0), (torch.arange(1), 5.0)]
    train(est, net, loss, lambda gen: batches, generator=torch.Generator(), device="cpu")
    assert got == batches and est.history_[0]["train_loss"] == 2.0


def test_diverged_training_names_the_owner_and_the_fix():
    net = torch.nn.Linear(1, 1)

    def loss(rows):
        return net.weight.sum() * float("nan")

    est = owner(patience=2, learning_rate=0.5)
    with pytest.raises(ValueError, match=r"^MyNet training diverged: the loss was NaN or "
                       r"infinite in all 2 epoch\(s\); lower learning_rate \(now 0.5\) or "
                       r"check the inputs$"):  # fmt: skip
        train(est, net, loss, all_rows, generator=torch.Generator(), device="cpu",
              name="MyNet", hint="check the inputs")  # fmt: skip
    assert len(est.history_) == est.n_epochs_ == 2


def test_only_the_given_parameters_train_and_keep_restores_their_state():
    """params and keep: a frozen part stays bit-identical; the trained part is restored to
    its best epoch (the first, on this rising curve)."""
    with seeded(0) as gen:
        net = torch.nn.ModuleDict({"frozen": torch.nn.Linear(1, 1), "head": torch.nn.Linear(1, 1)})
    frozen = {k: v.clone() for k, v in net["frozen"].state_dict().items()}
    snapshots, curve = [], iter([0.5, 0.6, 0.7])

    def loss(rows):
        return torch.nn.functional.mse_loss(net["head"](net["frozen"](X[rows]))[:, 0], Y[rows])

    def validation():
        snapshots.append(net["head"].weight.detach().clone())
        return next(curve)

    est = owner(patience=2)
    train(est, net, loss, all_rows, generator=gen, device="cpu", validation=validation,
          params=net["head"].parameters(), keep={"head.weight", "head.bias"})  # fmt: skip
    for k, v in net["frozen"].state_dict().items():
        assert torch.equal(v, frozen[k])
    assert torch.equal(net["head"].weight, snapshots[0]) and est.best_epoch_ == 0


def test_no_autocast_on_the_cpu_and_train_mode_is_called_each_epoch():
    net = torch.nn.Linear(1, 1)
    flags, modes = [], []

    def loss(rows):
        flags.append(torch.is_autocast_enabled() or torch.is_autocast_enabled("cpu"))
        return regression_loss(net)(rows)

    est = owner(max_epochs=3, patience=5)
    train(est, net, loss, all_rows, generator=torch.Generator(), device="cpu",
          train_mode=lambda: modes.append(1) or net.train())  # fmt: skip
    assert flags and not any(flags) and len(modes) == 3


def test_same_seed_same_training_and_seeded_leaves_the_callers_stream():
    def run(seed):
        with seeded(seed) as gen:
            net = torch.nn.Linear(1, 1)
            est = owner(max_epochs=5)
            train(est, net, regression_loss(net), all_rows, generator=gen, device="cpu")
        return [r["train_loss"] for r in est.history_], net.weight.detach().clone()

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    (h1, w1), (h2, w2), (h3, _) = run(0), run(0), run(1)
    assert torch.equal(torch.rand(3), expected)  # the caller's random state is untouched
    assert h1 == h2 and torch.equal(w1, w2) and h1 != h3


def test_shuffled_batches_cover_every_row_once_and_join_a_single_last_row():
    gen = torch.Generator().manual_seed(0)
    out = shuffled_batches(np.arange(9), 4, gen, "cpu")
    assert [len(b) for b in out] == [4, 4, 1]
    assert sorted(torch.cat(out).tolist()) == list(range(9))
    gen = torch.Generator().manual_seed(0)
    joined = shuffled_batches(np.arange(9), 4, gen, "cpu", join_single=True)
    assert [len(b) for b in joined] == [4, 5]
    assert torch.equal(torch.cat(joined), torch.cat(out))  # same seed, same order


def test_verbose_shows_a_progress_bar(monkeypatch):
    calls = []
    real = training.progress
    monkeypatch.setattr(training, "progress", lambda *a, **k: calls.append(k) or real(*a, **k))
    net = torch.nn.Linear(1, 1)
    for verbose in (True, False):
        est = owner(max_epochs=2, verbose=verbose)
        train(est, net, regression_loss(net), all_rows, generator=torch.Generator(),
              device="cpu", desc="fitting X")  # fmt: skip
    assert [(c["verbose"], c["desc"], c["total"], c["lines"]) for c in calls] == [
        (True, "fitting X", 2, True),
        (False, "fitting X", 2, True),
    ]


# -- one declaration of the constraints ----------------------------------------------------


def _neural_fusions():
    import toolkit.fusion  # noqa: F401  (registers every strategy)

    out, todo = [], [NeuralFusion]
    while todo:
        for sub in todo.pop().__subclasses__():
            out.append(sub)
            todo.append(sub)
    return sorted(out, key=lambda c: c.__name__)


def test_every_trainer_takes_the_shared_constraints_as_declared_once():
    from toolkit import AudioEncoder, ScanEncoder

    fusions = _neural_fusions()
    assert {c.__name__ for c in fusions} >= {
        "GatedFusion", "AttentionFusion", "LowRankFusion", "TensorFusion",
    }  # fmt: skip
    shared = ("max_epochs", "patience", "learning_rate", "weight_decay", "validation_fraction")
    for cls in [*fusions, ImageEncoder, AudioEncoder, ScanEncoder, TextEncoder]:
        constraints = cls._parameter_constraints
        for name in shared:
            assert constraints[name] == TRAINING_CONSTRAINTS[name], (cls.__name__, name)
            assert all(
                a is b for a, b in zip(constraints[name], TRAINING_CONSTRAINTS[name], strict=True)
            )
    for cls in fusions:
        for name in ("dropout", "batch_size", "device", "random_state"):
            assert cls._parameter_constraints[name][0] is TRAINING_CONSTRAINTS[name][0]
    for table in (_cnn.TRAINING_CONSTRAINTS, _text_finetune.FINE_TUNE_CONSTRAINTS):
        assert table["verbose"][0] is TRAINING_CONSTRAINTS["verbose"][0]
        assert table["dropout"][0] is TRAINING_CONSTRAINTS["dropout"][0]


def test_training_constraints_copies_and_refuses_unknown_names():
    table = training_constraints(exclude=("batch_size",))
    assert "batch_size" not in table and set(table) == set(TRAINING_CONSTRAINTS) - {"batch_size"}
    table["patience"].append(None)  # a copy: the declaration is untouched
    assert None not in TRAINING_CONSTRAINTS["patience"]
    with pytest.raises(KeyError, match=r"\['epochs'\] are not training parameters"):
        training_constraints(exclude=("epochs",))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"learning_rate": 0}, "'learning_rate' parameter of GatedFusion must be a float in "
         r"the range \(0.0, inf\). Got 0 instead"),
        ({"patience": 0}, r"'patience' parameter of GatedFusion must be an int in the range "
         r"\[1, inf\). Got 0 instead"),
        ({"validation_fraction": 1.0}, "'validation_fraction' parameter of GatedFusion must be "
         r"a float in the range \[0.0, 1.0\). Got 1.0 instead"),
        ({"max_epochs": 1.5}, "'max_epochs' parameter of GatedFusion must be an int"),
        ({"weight_decay": -1.0}, "'weight_decay' parameter of GatedFusion must be a float"),
    ],
)  # fmt: skip
def test_fusion_rejects_bad_training_settings_with_clear_messages(params, message):
    from toolkit.fusion import GatedFusion

    emb = Embeddings({"a": np.zeros((4, 2))})
    with pytest.raises(ValueError, match=message):
        GatedFusion(**params).fit(emb, [0, 1, 0, 1], n_classes=2)


def test_encoders_reject_bad_training_settings_with_clear_messages():
    images = [np.zeros((8, 8))] * 4
    with pytest.raises(ValueError, match="'verbose' parameter of ImageEncoder must be"):
        ImageEncoder(backend="cnn", verbose="yes").fit(images, [0, 1, 0, 1])
    with pytest.raises(ValueError, match="'patience' parameter of TextEncoder must be an int"):
        TextEncoder(backend="transformers", fine_tune=True, patience=0).fit(["a b"] * 4, [0, 1] * 2)


# -- the estimators train through the loop --------------------------------------------------


@pytest.fixture
def epochs(monkeypatch):
    """Counts the epochs run by the shared loop (its per-epoch function)."""
    count = []
    real = training._epoch
    monkeypatch.setattr(training, "_epoch", lambda *a: count.append(1) or real(*a))
    return count


@pytest.mark.parametrize("cls", _neural_fusions(), ids=lambda c: c.__name__)
def test_every_neural_fusion_trains_through_the_loop_with_whole_groups(cls, epochs, monkeypatch):
    import toolkit.model_selection as inner

    rng = np.random.default_rng(0)
    emb = Embeddings({"a": rng.normal(size=(40, 2)), "b": rng.normal(size=(40, 2))})
    y = (emb.blocks["a"][:, 0] > 0).astype(int)
    groups = np.repeat(np.arange(10), 4)
    seen = []
    real = inner.validation_split

    def spy(n, groups_, fraction, seed, min_rows=20):
        seen.append(real(n, groups_, fraction, seed, min_rows))
        return seen[-1]

    monkeypatch.setattr(inner, "validation_split", spy)
    fusion = cls(max_epochs=3, random_state=0, device="cpu").fit(emb, y, n_classes=2, groups=groups)
    assert len(epochs) == fusion.n_epochs_ == len(fusion.history_) >= 1
    ((train_rows, valid_rows),) = seen
    assert len(valid_rows) and not set(groups[train_rows]) & set(groups[valid_rows])
    assert len(train_rows) + len(valid_rows) == 40


def test_cnn_encoder_trains_through_the_loop(epochs):
    rng = np.random.default_rng(0)
    images = [rng.random((8, 8)) for _ in range(24)]
    enc = ImageEncoder(backend="cnn", widths=(2,), max_epochs=2, device="cpu", progress=False,
                       random_state=0).fit(images, [i % 2 for i in range(24)])  # fmt: skip
    assert len(epochs) == enc.n_epochs_ == 2
    assert set(enc.history_[0]) == {"epoch", "train_loss", "valid_loss"}


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A tiny random BERT (hidden 8, one layer) with a word-level tokenizer, saved locally."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("bert8")
    vocab = {w: i for i, w in enumerate("[PAD] [UNK] [CLS] [SEP] [MASK] good bad film".split())}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]",
    ).save_pretrained(folder)  # fmt: skip
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=16, max_position_embeddings=16,
    )  # fmt: skip
    BertModel(config).save_pretrained(folder)
    return str(folder)


def test_text_fine_tuning_trains_through_the_loop(tiny_bert, epochs):
    texts = ["film good", "film bad"] * 12
    enc = TextEncoder(backend="transformers", model=tiny_bert, fine_tune=True, max_epochs=2,
                      trainable_layers=1, device="cpu", progress=False, random_state=0)  # fmt: skip
    enc.fit(texts, [0, 1] * 12)
    assert len(epochs) == enc.n_epochs_ == 2
    assert enc.trained_parameters_ and all(
        not p.requires_grad for p in enc.model_.parameters()
    )  # frozen again after training
