"""Supervised fine-tuning of a transformers text encoder inside ``fit``.

``TextEncoder(backend="transformers", fine_tune=True)`` trains the top ``trainable_layers``
transformer layers of the loaded model (the rest stay frozen, bit for bit) together with a
linear head on the mean-pooled token states, with AdamW and early stopping on an inner
validation split of the training rows (whole groups when ``groups`` are given, see
:func:`toolkit.model_selection.validation_split`). The encoder then gives the fine-tuned
model's mean-pooled states (``encode``) or the head's outputs (``encode_scores``, which the
estimators cross-fit), like the CNN backends of :mod:`toolkit.encoders._cnn`.

Only the top layers are unfrozen (no adapters): the frozen layers need no gradients (autograd
records nothing below the first trainable layer), so a MiniLM-sized model trains on a CPU, and
the result is saved as an ordinary ``save_pretrained`` folder plus a safetensors head, which the
persistence layer already checks (no custom code, tensors matched against the head that
``head_spec_`` describes, built on the meta device).
"""

from __future__ import annotations

import numpy as np

from toolkit import model_selection
from toolkit._utils import check_random_state_seed
from toolkit.encoders import _finetune as finetune
from toolkit.training import (
    chunks,
    head_target,
    mean_loss,
    seeded,
    train,
    training_constraints,
)

#: Parameters of fine-tuning (documented in :class:`~toolkit.encoders.text.TextEncoder`):
#: its own and those of the shared loop (:data:`toolkit.training.TRAINING_CONSTRAINTS`), less
#: ``batch_size``, ``device`` and ``random_state``, which the encoder declares itself.
FINE_TUNE_CONSTRAINTS = {
    **finetune.FINE_TUNE_CONSTRAINTS,
    "trainable_layers": finetune.depth_constraint(),
    **training_constraints(exclude=("batch_size", "device", "random_state")),
}

_MAX_UNITS = 100_000


def head_spec(in_features: int, n_out: int) -> dict:
    """The plain-dict description of the linear head (saved in ``model.skops``)."""
    return {"in_features": int(in_features), "n_out": int(n_out)}


def build_head(spec):
    """The untrained linear head ``spec`` describes (float32, on torch's current device)."""
    bad = "the text head's description (head_spec_) is malformed"
    try:
        in_features, n_out = int(spec["in_features"]), int(spec["n_out"])
    except (TypeError, KeyError, ValueError) as exc:
        raise ValueError(f"{bad} ({exc})") from exc
    if not (1 <= in_features <= _MAX_UNITS and 1 <= n_out <= _MAX_UNITS):
        raise ValueError(f"{bad} (in_features {in_features}, n_out {n_out})")
    import torch

    return torch.nn.Linear(in_features, n_out)


def transformer_layers(model):
    """The model's stack of transformer layers: the outermost ``ModuleList`` holding
    ``config.num_hidden_layers`` modules (``encoder.layer`` of BERT, RoBERTa and MiniLM,
    ``transformer.layer`` of DistilBERT), or ValueError."""
    import torch

    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for _, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise ValueError(
        f"TextEncoder(fine_tune=True) cannot find the transformer layers of "
        f"{type(model).__name__} (no list of config.num_hidden_layers={n} layers); pass "
        "trainable_layers=0 to train the head alone on its frozen states"
    )


def labelled_texts(encoder, X, y, groups):
    """The readable training texts of ``X`` with their labels' (target, is classification,
    number of outputs) and their groups; missing cells are skipped with their labels."""
    from toolkit.encoders._cnn import _targets, labelled_column, read_present

    name = type(encoder).__name__
    items, labels, y, groups = labelled_column(
        encoder, X, y, groups,
        learner=f"{name}(fine_tune=True) learns", otherwise="leave fine_tune=False",
    )  # fmt: skip
    kept, texts = read_present(encoder, items, labels)
    if len(texts) < 2:
        raise ValueError(
            f"{name}(fine_tune=True) needs at least 2 readable texts in {encoder._where()} to "
            f"train on, got {len(texts)} of {len(items)} rows"
        )
    rows = np.asarray(kept)
    target, classify, n_out = _targets(y[rows], [labels[i] for i in kept])
    if classify and n_out < 2:
        raise ValueError(
            f"{name}(fine_tune=True) needs at least 2 classes among the labelled texts of "
            f"{encoder._where()}, got one; fine-tune on data with both outcomes"
        )
    return texts, target, classify, n_out, None if groups is None else groups[rows]


def epoch_batches(rows: np.ndarray, lengths: np.ndarray, size: int, gen) -> list[list[int]]:
    """One epoch's batches of ``rows``, in a random order drawn from ``gen``: the rows are
    shuffled, each run of 50 batches' worth is sorted by token length and cut into batches
    (little padding: on UCI sentences this halves the work of random batches), and the
    batches are shuffled."""
    import torch

    perm = rows[torch.randperm(len(rows), generator=gen).numpy()]
    out = []
    for start in range(0, len(perm), 50 * size):
        pool = perm[start : start + 50 * size]
        pool = pool[np.argsort(lengths[pool], kind="stable")]
        out += [pool[i : i + size].tolist() for i in range(0, len(pool), size)]
    return [out[i] for i in torch.randperm(len(out), generator=gen).tolist()]


def fine_tune(encoder, texts: list[str], target, classify: bool, n_out: int, groups) -> None:
    """Train ``encoder.model_``'s top layers and a head on ``texts`` with the shared loop
    (:func:`toolkit.training.train`); set the fitted state."""
    import torch

    from toolkit.encoders._cnn import _torch_threads

    model, device = encoder.model_, encoder.device_
    seed = check_random_state_seed(encoder.random_state)
    top, trainable, names = _unfreeze_top(encoder, model)
    train_idx, val_idx = model_selection.validation_split(
        len(texts), groups, encoder.validation_fraction, seed
    )
    encoder.is_classifier_ = classify
    y, loss_fn = head_target(encoder, target, classify, train_idx)
    y = y.to(device)
    encoder.head_spec_ = head_spec(encoder.n_features_out_, n_out)
    tokens = encoder._finish_reads(texts)  # once; a batch is padded to its longest text
    lengths = np.asarray([len(t["input_ids"]) for t in tokens])
    size = encoder._train_batch_size()
    by_length = val_idx[np.argsort(lengths[val_idx], kind="stable")].tolist()
    validation = (lambda: mean_loss(loss, chunks(by_length, size))) if len(val_idx) else None

    def loss(rows):
        batch = {k: v.to(device) for k, v in encoder._pad([tokens[i] for i in rows]).items()}
        pooled = encoder._pool(batch)
        pooled = torch.nn.functional.dropout(pooled, encoder.dropout, training=head.training)
        out = head(pooled).float()
        return loss_fn(out if classify else out[:, 0], y[rows])

    def train_mode():
        model.eval()  # frozen layers: no dropout
        for layer in top:
            layer.train()
        head.train()

    with _torch_threads(device), seeded(seed) as gen:
        head = build_head(encoder.head_spec_).to(device)
        net = torch.nn.ModuleDict({"model": model, "head": head})
        keep = {f"model.{n}" for n in names} | {f"head.{k}" for k in head.state_dict()}
        try:
            train(
                encoder,
                net,
                loss,
                lambda generator: epoch_batches(train_idx, lengths, size, generator),
                generator=gen,
                device=device,
                validation=validation,
                params=[*trainable, *head.parameters()],
                train_mode=train_mode,
                keep=keep,
                name="TextEncoder(fine_tune=True)",
                desc="fine-tuning text transformers",
            )
        finally:
            model.requires_grad_(False)
    encoder.model_ = model.eval()
    encoder.head_ = head.eval()
    encoder.trained_parameters_ = names


def _unfreeze_top(encoder, model) -> tuple[list, list, list[str]]:
    """Freeze ``model`` but its top ``trainable_layers`` transformer layers (checked):
    (those layers, their parameters, their qualified parameter names)."""
    k = encoder.trainable_layers
    top = []
    if k:
        stack = transformer_layers(model)
        if k > len(stack):
            raise ValueError(
                f"trainable_layers={k} exceeds the {len(stack)} transformer layers of "
                f"'{encoder.model_location_}'; choose 0 to {len(stack)}"
            )
        top = list(stack)[len(stack) - k :]
    model.requires_grad_(False)
    trainable = [p for layer in top for p in layer.parameters()]
    for p in trainable:
        p.requires_grad_(True)
    return top, trainable, [n for n, p in model.named_parameters() if p.requires_grad]
