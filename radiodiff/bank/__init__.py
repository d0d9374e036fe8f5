"""The midpoint bank of RadioDiff-Flux: cached diffusion latents at `t_mid`, in Parquet.

`MidpointBank` stores and serves latents of one `BankKey` (model, sampler, t_mid);
`layout_embedding` gives the static-layout vector used to find a similar scene;
`verify_bank` checks a whole bank directory; `ServingBank` layers a writable serving bank
over a sealed, built one.
"""

from radiodiff.bank.embedding import EMBEDDING_DIM, layout_embedding
from radiodiff.bank.schema import BANK_SCHEMA, SCHEMA_VERSION, BankError
from radiodiff.bank.serving import ServingBank
from radiodiff.bank.store import BankKey, Midpoint, MidpointBank, is_sealed, set_sealed
from radiodiff.bank.verify import inspect_bank, verify_bank

__all__ = [
    "BANK_SCHEMA",
    "EMBEDDING_DIM",
    "SCHEMA_VERSION",
    "BankError",
    "BankKey",
    "Midpoint",
    "MidpointBank",
    "ServingBank",
    "inspect_bank",
    "is_sealed",
    "layout_embedding",
    "set_sealed",
    "verify_bank",
]
