"""Encoding throughput on a Dask LocalCluster with 1 vs 2 worker processes (same run).

    python benchmarks/distributed_scaling.py [--n 800]

Each worker has one thread (and one torch thread), builds the encoders once, and encodes
its partitions of generated voice clips (default MFCC/prosody audio features) and faces.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Row, machine  # noqa: E402


def _set_threads():
    import torch

    torch.set_num_threads(1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=800)
    args = parser.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = "1"
    from dask.distributed import Client, LocalCluster

    from toolkit.datasets import make_sentiment_clips
    from toolkit.distributed import encode_manifest

    data = make_sentiment_clips(args.n, random_state=0)
    frame = data.frame[["audio", "face"]]
    mods = [m for m in data.modalities if m[0] in ("audio", "face")]
    times = {}
    for workers in (1, 2):
        with LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
        ) as cluster:
            with Client(cluster) as client:
                client.run(_set_threads)
                with (
                    tempfile.TemporaryDirectory() as warm
                ):  # load libraries and encoders on every worker
                    encode_manifest(
                        frame.iloc[: 8 * workers], mods, warm, client=client, partition_size=8
                    )
                with tempfile.TemporaryDirectory() as out:
                    start = time.perf_counter()
                    encode_manifest(frame, mods, out, client=client, partition_size=50)
                    times[workers] = time.perf_counter() - start
    speedup = times[1] / times[2]
    print(f"machine: {machine()}")
    print(
        Row(
            "9",
            f"encode {args.n} clips (audio + face), 2 vs 1 Dask workers",
            speedup,
            "x",
            ">= 1.6",
            speedup >= 1.6,
            f"1 worker {times[1]:.1f} s, 2 workers {times[2]:.1f} s",
        ).line()
    )


if __name__ == "__main__":
    main()
