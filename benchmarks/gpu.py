"""Row 7 (GPU): encoder and gated-fusion throughput against the raw model loop, same device.

Run on a machine with a GPU:

    python benchmarks/gpu.py --text-model DIR [--device cuda] [--quick] [--rows text,scan,gated]

``DIR`` holds a transformers model (config + tokenizer; when it has no weights file, a
randomly initialised model of that configuration is used, which times the same work).
Each row prints our throughput, the raw loop's throughput measured in the same process,
and their ratio (goal >= 0.9), plus a CPU-vs-GPU agreement check.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import sentences  # noqa: E402


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def text_row(model_dir, device, n):
    import torch
    from transformers import AutoModel, AutoTokenizer

    from toolkit import TextEncoder

    texts = sentences(n, max_words=120)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).to(device).eval()

    def raw():
        out = []
        with torch.inference_mode():
            for i in range(0, n, 64):
                enc = tok(
                    texts[i : i + 64],
                    padding=True,
                    truncation=True,
                    max_length=256,
                    return_tensors="pt",
                ).to(device)
                hidden = model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                out.append(((hidden * mask).sum(1) / mask.sum(1)).cpu())
        _sync(device)
        return torch.cat(out).numpy()

    enc = TextEncoder(
        backend="transformers", model=model_dir, batch_size=64, device=str(device), progress=False
    ).fit(["x"])
    raw()  # warm-up
    t0 = time.perf_counter()
    ref = raw()
    t_raw = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = enc.transform(texts)
    _sync(device)
    t_ours = time.perf_counter() - t0
    err = float(np.abs(ours - ref).max())
    return ("text encoder (transformers, length-sorted)", n / t_ours, n / t_raw, err)


def scan_row(device, n):
    import torch
    from monai.networks.nets import DenseNet121
    from sklearn.base import clone

    from toolkit import ScanEncoder
    from toolkit.encoders._torch import penultimate

    rng = np.random.default_rng(0)
    vols = [rng.random((64, 64, 64), dtype=np.float32) for _ in range(n)]
    net = DenseNet121(spatial_dims=3, in_channels=1, out_channels=2)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "densenet.pt"
        torch.save(net.state_dict(), path)
        enc = ScanEncoder(
            backend="monai",
            model="DenseNet121",
            weights=path,
            spatial_size=(64, 64, 64),
            batch_size=8,
            device=str(device),
            progress=False,
        ).fit([vols[0]])
        # The same encoder on the CPU, for the agreement check.
        cpu = clone(enc).set_params(device="cpu").fit([vols[0]])
    raw_net = net.to(device).eval()
    batch = torch.from_numpy(np.stack(vols[:8])[:, None]).to(device)

    def raw():
        with torch.inference_mode():
            for i in range(0, n, 8):
                x = torch.from_numpy(np.stack(vols[i : i + 8])[:, None]).to(device)
                penultimate(raw_net, x).cpu()
        _sync(device)

    with torch.inference_mode():
        penultimate(raw_net, batch)
    enc.transform(vols[:8])  # warm-up: the batched resize/scale kernels on the device
    _sync(device)
    t0 = time.perf_counter()
    raw()
    t_raw = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = enc.transform(vols)
    _sync(device)
    t_ours = time.perf_counter() - t0
    # Agreement: the same encoder on the CPU (batched preprocessing there too).
    err = float(np.abs(cpu.transform(vols[:8]) - ours[:8]).max())
    return (
        "scan encoder (MONAI DenseNet121 3-D, with batched resize + scaling on the device)",
        n / t_ours,
        n / t_raw,
        err,
    )


def gated_row(device, n, epochs):
    import torch

    from toolkit import Embeddings, GatedFusion
    from toolkit.fusion._gated_module import GatedUnit

    rng = np.random.default_rng(0)
    dims = {"text": 384, "audio": 131, "image": 427}
    blocks = {k: rng.normal(size=(n, d)).astype(np.float32) for k, d in dims.items()}
    y = (blocks["text"][:, 0] + blocks["audio"][:, 0] > 0).astype(int)
    emb = Embeddings(blocks)
    fusion = GatedFusion(
        max_epochs=epochs, patience=epochs, batch_size=256, device=str(device), random_state=0
    )
    t0 = time.perf_counter()
    fusion.fit(emb, y, n_classes=2)
    _sync(device)
    t_ours = time.perf_counter() - t0
    # Raw loop: the same module, batches, optimizer and epochs, no validation or dropout of modalities.
    xs = [torch.from_numpy(b).double().to(device) for b in blocks.values()]
    mask = torch.ones(n, 3, dtype=torch.bool, device=device)
    target = torch.from_numpy(y).to(device)
    module = GatedUnit(list(dims.values()), 32, 2, 0.3).to(device, torch.float64)
    opt = torch.optim.AdamW(module.parameters(), lr=3e-3, weight_decay=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    for _ in range(fusion.n_epochs_):
        perm = torch.randperm(n, device=device)
        for i in range(0, n, 256):
            idx = perm[i : i + 256]
            out, _ = module([x[idx] for x in xs], mask[idx])
            loss = loss_fn(out, target[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    _sync(device)
    t_raw = time.perf_counter() - t0
    work = n * fusion.n_epochs_
    return (
        f"gated fusion training ({fusion.n_epochs_} epochs, n={n})",
        work / t_ours,
        work / t_raw,
        float("nan"),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--text-model", help="transformers folder (the text row needs it)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    parser.add_argument(
        "--rows", default="text,scan,gated", help="comma-separated subset of text,scan,gated"
    )
    args = parser.parse_args(argv)
    wanted = set(args.rows.split(","))
    import torch

    device = torch.device(args.device)
    model_dir = args.text_model
    if "text" in wanted and model_dir is None:
        parser.error("the text row needs --text-model DIR (or pass --rows scan,gated)")
    if "text" in wanted and not any(Path(model_dir).glob("*.safetensors")):
        from transformers import AutoConfig, AutoModel

        torch.manual_seed(0)
        tmp = tempfile.mkdtemp()
        AutoModel.from_config(AutoConfig.from_pretrained(model_dir)).save_pretrained(tmp)
        for f in Path(model_dir).iterdir():
            if f.is_file() and f.name != "config.json":
                (Path(tmp) / f.name).write_bytes(f.read_bytes())
        model_dir = tmp
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}")
    sizes = (64, 8, 512, 3) if args.quick else (2000, 64, 20000, 20)
    rows = []
    if "text" in wanted:
        rows.append(text_row(model_dir, device, sizes[0]))
    if "scan" in wanted:
        try:
            rows.append(scan_row(device, sizes[1]))
        except ImportError as exc:
            print(f"scan row skipped: {exc}")
    if "gated" in wanted:
        rows.append(gated_row(device, sizes[2], sizes[3]))
    print(
        "| what | ours (items/s) | raw loop (items/s) | ratio | goal "
        "| max abs diff (text: vs the raw loop; scan: vs the encoder on the CPU) |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for what, ours, raw, err in rows:
        print(f"| {what} | {ours:.1f} | {raw:.1f} | {ours / raw:.2f} | >= 0.9 | {err:.2e} |")


if __name__ == "__main__":
    main()
