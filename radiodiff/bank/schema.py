"""The midpoint bank's file format: one explicit pyarrow schema, versioned in its metadata.

One row is one cached midpoint latent. Its key columns (`model_hash`, `sampler_hash`,
`t_mid`) say what the latent is valid for; `scene_id`, `cell` and `seed` say which
trajectory it is. The latent itself is raw little-endian bytes in C order, described by
`shape` and `dtype` and protected by a sha256 `checksum`.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pyarrow as pa

from radiodiff.errors import UserError

SCHEMA_VERSION = "1"
VERSION_KEY = b"radiodiff.bank.schema_version"

BANK_SCHEMA = pa.schema(
    [
        pa.field("scene_id", pa.int64(), nullable=False),
        pa.field("cell", pa.int32(), nullable=False),  # -1: static midpoint; >= 0: coarse Tx cell
        pa.field("embedding", pa.list_(pa.float32()), nullable=False),
        pa.field("t_mid", pa.float64(), nullable=False),  # step index (DDPM/DDIM) or time in (0, 1]
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("model_hash", pa.string(), nullable=False),
        pa.field("sampler_hash", pa.string(), nullable=False),
        pa.field("latent", pa.binary(), nullable=False),
        pa.field("shape", pa.list_(pa.int32()), nullable=False),
        pa.field("dtype", pa.string(), nullable=False),
        pa.field("checksum", pa.string(), nullable=False),
        pa.field("created", pa.timestamp("us", tz="UTC"), nullable=False),
    ],
    metadata={VERSION_KEY: SCHEMA_VERSION.encode()},
)

KEY_COLUMNS = ("scene_id", "cell", "seed", "t_mid", "model_hash", "sampler_hash")
INDEX_COLUMNS = (*KEY_COLUMNS, "embedding")  # small columns: enough to find any entry
LATENT_COLUMNS = (*KEY_COLUMNS, "latent", "shape", "dtype", "checksum")

# Numeric dtypes only: a stored dtype string must never make numpy build object arrays.
LATENT_DTYPES = frozenset(
    ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
)


class BankError(UserError):
    """A bank file that cannot be read, does not follow the schema, or fails a check.

    The message always names the file and the reason.
    """


def schema_problem(schema: pa.Schema) -> str | None:
    """Why `schema` (read from a Parquet file) is not this bank schema, or None if it is."""
    metadata = schema.metadata or {}
    if VERSION_KEY not in metadata:
        return f"no bank schema version (metadata key {VERSION_KEY.decode()}); not a midpoint bank file"
    version = metadata[VERSION_KEY].decode(errors="replace")
    if version != SCHEMA_VERSION:
        return f"bank schema version {version!r}, this code reads version {SCHEMA_VERSION!r}"
    for field in BANK_SCHEMA:
        index = schema.get_field_index(field.name)
        if index < 0:
            return f"column {field.name!r} is missing"
        if not schema.field(index).type.equals(field.type):
            return f"column {field.name!r} has type {schema.field(index).type}, expected {field.type}"
    return None


def latent_checksum(payload: bytes) -> str:
    """The sha256 hex digest that protects a latent's bytes."""
    return hashlib.sha256(payload).hexdigest()


def encode_latent(latent: np.ndarray) -> tuple[bytes, list[int], str]:
    """A latent's stored form: little-endian C-order bytes, shape and dtype name."""
    array = np.asarray(latent)
    if array.dtype.name not in LATENT_DTYPES:
        raise ValueError(f"latent dtype {array.dtype} is not one of {sorted(LATENT_DTYPES)}")
    little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return little.tobytes(order="C"), [int(n) for n in array.shape], array.dtype.name


def decode_latent(row: dict, *, path: object) -> np.ndarray:
    """The latent stored in `row` (a dict of `LATENT_COLUMNS`), writable, native byte order.

    Raises BankError naming `path` if the checksum does not match the bytes, or the bytes,
    shape and dtype do not fit together.
    """
    entry = f"scene {row['scene_id']} (cell {row['cell']}, seed {row['seed']})"
    payload, shape, dtype = row["latent"], row["shape"], row["dtype"]
    if latent_checksum(payload) != row["checksum"]:
        raise BankError(f"{path}: checksum mismatch for {entry}: the latent bytes changed after writing")
    if dtype not in LATENT_DTYPES:
        raise BankError(f"{path}: unsupported latent dtype {dtype!r} for {entry}")
    if any(n < 0 for n in shape):
        raise BankError(f"{path}: negative latent shape {shape} for {entry}")
    stored = np.dtype(dtype).newbyteorder("<")
    expected = math.prod(shape) * stored.itemsize
    if len(payload) != expected:
        raise BankError(f"{path}: latent of {entry} has {len(payload)} bytes, {dtype} {shape} needs {expected}")
    return np.frombuffer(payload, dtype=stored).reshape(shape).astype(np.dtype(dtype), copy=True)


def encode_table(midpoints, *, model_hash: str, sampler_hash: str, t_mid: float, created) -> pa.Table:
    """The rows of `midpoints` (objects with scene_id, cell, seed, embedding [D], latent) under
    one key, as a table of BANK_SCHEMA; `created` is a timezone-aware datetime."""
    encoded = [encode_latent(m.latent) for m in midpoints]
    payloads = [payload for payload, _, _ in encoded]
    embeddings = [np.asarray(m.embedding, dtype=np.float32).reshape(-1) for m in midpoints]
    offsets = np.cumsum([0] + [len(e) for e in embeddings], dtype=np.int32)
    flat = np.concatenate(embeddings) if embeddings else np.zeros(0, np.float32)
    n = len(midpoints)
    columns = {
        "scene_id": pa.array([m.scene_id for m in midpoints], pa.int64()),
        "cell": pa.array([m.cell for m in midpoints], pa.int32()),
        "embedding": pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.float32())),
        "t_mid": pa.array([t_mid] * n, pa.float64()),
        "seed": pa.array([m.seed for m in midpoints], pa.int64()),
        "model_hash": pa.array([model_hash] * n, pa.string()),
        "sampler_hash": pa.array([sampler_hash] * n, pa.string()),
        "latent": pa.array(payloads, pa.binary()),
        "shape": pa.array([shape for _, shape, _ in encoded], pa.list_(pa.int32())),
        "dtype": pa.array([dtype for _, _, dtype in encoded], pa.string()),
        "checksum": pa.array([latent_checksum(p) for p in payloads], pa.string()),
        "created": pa.array([created] * n, pa.timestamp("us", tz="UTC")),
    }
    return pa.Table.from_arrays([columns[f.name] for f in BANK_SCHEMA], schema=BANK_SCHEMA)
