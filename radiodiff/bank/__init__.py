"""The midpoint bank of RadioDiff-Flux: cached diffusion latents at `t_mid`, in Parquet.

`MidpointBank` stores and serves latents of one `BankKey` (model, sampler, t_mid);
`layout_embedding` gives the static-layout vector used to find a similar scene;
`verify_bank` checks a whole bank directory.
"""

from radiodiff.bank.embedding import EMBEDDING_DIM, layout_embedding
from radiodiff.bank.schema import BANK_SCHEMA, SCHEMA_VERSION, BankError
from radiodiff.bank.store import BankKey, Midpoint, MidpointBank
from radiodiff.bank.verify import verify_bank

__all__ = [
    "BANK_SCHEMA",
    "EMBEDDING_DIM",
    "SCHEMA_VERSION",
    "BankError",
    "BankKey",
    "Midpoint",
    "MidpointBank",
    "layout_embedding",
    "verify_bank",
]
