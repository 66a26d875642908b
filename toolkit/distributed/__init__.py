"""Scale-out through Dask: distributed encoding of large manifests into embedding shards,
and explanations over row partitions. Nothing here is imported by ``import toolkit``; it
needs the ``distributed`` extra (``pip install 'multimodal-toolkit[distributed]'``) only
when a ``client`` is passed.

The toolkit's other parallel work goes through joblib, so a study or a scikit-learn search
spreads over a cluster with ``joblib.parallel_config(backend="dask")`` (``mmtk run
--scheduler ADDRESS`` does this for studies).

Shards and their index
----------------------
:func:`encode_manifest` writes one ``part-NNNNN.npz`` per partition of rows (uncompressed,
no pickles: the row ids, one float32 block per modality, the availability mask and the
partition's fingerprint) and ``index.json``. The index records the job's identity: the row
ids (a hash of their values and dtype, and their count), the partition size, the modality
names, each modality's columns, each encoder's class + parameters key (weights files by
content fingerprint, fitted state for encoders fitted on a sample) and the fingerprint
choice (``"sampled"`` or ``"full"``, as in :mod:`toolkit.cache`). It is written before any
shard, so

- writing into a folder that holds shards of another job (another frame, other modalities,
  columns, encoders or partition size, an index that cannot be read, or shards without an
  index) is refused with an error saying what differs; write into another folder;
- re-running the same job resumes: a shard is kept only when it reads back whole and its
  fingerprint (the job's identity, the partition's row ids and the content keys of its
  cells, files by content fingerprint) matches; a shard that is corrupt, stale (an input
  file changed) or of another job is encoded again, with a
  :class:`~toolkit.cache.CacheShardWarning`.

:func:`load_embeddings` checks every shard against the index (fingerprint, row count, id
dtype, widths, finite values where available) and refuses one that does not match, naming
it; it returns the row ids with the values and dtype they were written with (strings,
integers, floats, naive datetimes or timedeltas; ids of mixed types are refused when
encoding). Ids that ``.npz`` cannot give back unchanged are refused when encoding, saying
what to do: timezone-aware datetimes (the timezone would be lost: convert them to UTC and
drop the zone, or to strings) and strings holding a NUL character (numpy drops trailing
NULs, so ``"a"`` and ``"a\\x00"`` would become the same id).

``index.json`` is read with bounded resources: at most :data:`MAX_INDEX_BYTES` bytes
(``max_index_bytes``) and :data:`MAX_INDEX_DEPTH` levels of nesting (an index nests 4);
a larger or deeper file is refused naming it, as is one that cannot be parsed.

Modules: :mod:`~toolkit.distributed.encoding` (:func:`encode_manifest`,
:func:`encode_partition`), :mod:`~toolkit.distributed.reading` (:func:`load_embeddings`),
:mod:`~toolkit.distributed.explain` (:func:`explain_partitions`),
:mod:`~toolkit.distributed.index` (the index and the job's identity) and
:mod:`~toolkit.distributed.ids` (row ids).

Example
-------
>>> from dask.distributed import Client, LocalCluster            # doctest: +SKIP
>>> client = Client(LocalCluster(n_workers=2))                   # doctest: +SKIP
>>> encode_manifest(frame, modalities, "embeddings/", client=client)   # doctest: +SKIP
>>> emb, row_ids = load_embeddings("embeddings/")               # doctest: +SKIP
"""

from __future__ import annotations

from toolkit.distributed.encoding import encode_manifest, encode_partition
from toolkit.distributed.explain import explain_partitions
from toolkit.distributed.index import INDEX_VERSION, MAX_INDEX_BYTES, MAX_INDEX_DEPTH
from toolkit.distributed.reading import load_embeddings

__all__ = [
    "INDEX_VERSION",
    "MAX_INDEX_BYTES",
    "MAX_INDEX_DEPTH",
    "encode_manifest",
    "encode_partition",
    "explain_partitions",
    "load_embeddings",
]
