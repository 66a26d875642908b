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

from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from toolkit._utils import check_random_state_seed, progress

#: Parameters of fine-tuning (documented in :class:`~toolkit.encoders.text.TextEncoder`).
FINE_TUNE_CONSTRAINTS = {
    "fine_tune": ["boolean", StrOptions({"top"})],
    "trainable_layers": [Interval(Integral, 0, None, closed="left")],
    "max_epochs": [Interval(Integral, 1, None, closed="left")],
    "patience": [Interval(Integral, 1, None, closed="left")],
    "learning_rate": [Interval(Real, 0.0, None, closed="neither")],
    "weight_decay": [Interval(Real, 0.0, None, closed="left")],
    "dropout": [Interval(Real, 0.0, 1.0, closed="left")],
    "validation_fraction": [Interval(Real, 0.0, 1.0, closed="left")],
    "verbose": ["boolean"],
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
    """Train ``encoder.model_``'s top layers and a head on ``texts``; set the fitted state."""
    import torch

    from toolkit.encoders._cnn import _torch_threads
    from toolkit.model_selection import validation_split

    model, device = encoder.model_, encoder.device_
    seed = check_random_state_seed(encoder.random_state)
    k = encoder.trainable_layers
    if k:
        stack = transformer_layers(model)
        if k > len(stack):
            raise ValueError(
                f"trainable_layers={k} exceeds the {len(stack)} transformer layers of "
                f"'{encoder.model_location_}'; choose 0 to {len(stack)}"
            )
        top = list(stack)[len(stack) - k :]
    else:
        top = []
    for p in model.parameters():
        p.requires_grad_(False)
    trainable = [p for layer in top for p in layer.parameters()]
    for p in trainable:
        p.requires_grad_(True)
    names = [n for n, p in model.named_parameters() if p.requires_grad]

    train_idx, val_idx = validation_split(len(texts), groups, encoder.validation_fraction, seed)
    encoder.is_classifier_ = classify
    if classify:
        y = torch.as_tensor(target, dtype=torch.int64)
        loss_fn = torch.nn.CrossEntropyLoss()
    else:
        encoder.y_mean_ = float(np.mean(target[train_idx]))
        encoder.y_scale_ = float(np.std(target[train_idx])) or 1.0
        y = torch.as_tensor((target - encoder.y_mean_) / encoder.y_scale_, dtype=torch.float32)
        loss_fn = torch.nn.MSELoss()
    y = y.to(device)
    encoder.head_spec_ = head_spec(encoder.n_features_out_, n_out)
    amp = device.type == "cuda"

    # Tokenized once; batches are padded to their own longest text.
    tokens = encoder._finish_reads(texts)
    lengths = np.asarray([len(t["input_ids"]) for t in tokens])
    size = encoder._train_batch_size()

    def forward(head, rows, training: bool):
        batch = {k: v.to(device) for k, v in encoder._pad([tokens[i] for i in rows]).items()}
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            pooled = encoder._pool(batch)
            pooled = torch.nn.functional.dropout(pooled, encoder.dropout, training=training)
            out = head(pooled).float()
        return out if classify else out[:, 0]

    def valid_loss(head) -> float:
        model.eval()
        head.eval()
        total = 0.0
        order = val_idx[np.argsort(lengths[val_idx], kind="stable")].tolist()
        with torch.no_grad():
            for start in range(0, len(order), size):
                rows = order[start : start + size]
                total += float(loss_fn(forward(head, rows, False), y[rows])) * len(rows)
        return total / len(order)

    with _torch_threads(device), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        head = build_head(encoder.head_spec_).to(device)
        opt = torch.optim.AdamW(
            [*trainable, *head.parameters()],
            lr=encoder.learning_rate,
            weight_decay=encoder.weight_decay,
        )
        best, best_state, since = np.inf, None, 0
        encoder.history_ = []
        bar = progress(
            range(encoder.max_epochs),
            total=encoder.max_epochs,
            desc="fine-tuning text transformers",
            enabled=encoder.verbose,
        )
        for epoch in bar:
            model.eval()  # frozen layers: no dropout
            for layer in top:
                layer.train()
            head.train()
            order = epoch_batches(train_idx, lengths, size, gen)
            total = 0.0
            for rows in order:
                loss = loss_fn(forward(head, rows, True), y[rows])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(rows)
            record = {"epoch": epoch, "train_loss": total / max(len(train_idx), 1)}
            monitor = record["train_loss"]
            if len(val_idx):
                monitor = record["valid_loss"] = valid_loss(head)
            encoder.history_.append(record)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix({k: round(v, 4) for k, v in record.items() if k != "epoch"})
            if monitor < best - 1e-5:
                best, since, encoder.best_epoch_ = monitor, 0, epoch
                params = dict(model.named_parameters())
                best_state = (
                    {n: params[n].detach().clone() for n in names},
                    {n: v.detach().clone() for n, v in head.state_dict().items()},
                )
            else:
                since += 1
                if since >= encoder.patience:
                    break
        if hasattr(bar, "close"):
            bar.close()
    for p in trainable:
        p.requires_grad_(False)
    if best_state is None:
        raise ValueError(
            f"TextEncoder(fine_tune=True) training diverged: the loss was NaN or infinite in "
            f"all {len(encoder.history_)} epoch(s); lower learning_rate (now "
            f"{encoder.learning_rate})"
        )
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, value in best_state[0].items():
            params[n].copy_(value)
    head.load_state_dict(best_state[1])
    encoder.model_ = model.eval()
    encoder.head_ = head.eval()
    encoder.trained_parameters_ = names
    encoder.n_epochs_ = len(encoder.history_)

