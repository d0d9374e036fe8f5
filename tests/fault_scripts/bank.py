"""Driver: `fill_bank` with the toy LDM over the tiny dataset's train and test layouts.

    python tests/fault_scripts/bank.py LDM VAE DATASET BANK --t-mids 30 20 --seeds 0 1
        [--die-in-write N | --die-after-publish N]

Each (t_mid, seed) becomes one Parquet part. Prints "written N" at the end.
`--die-in-write N` SIGKILLs the process halfway through writing the N-th part (1-based);
`--die-after-publish N` SIGKILLs it once the N-th part has its name, before the bank's
record lists it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from radiodiff.config import FluxConfig


def flux_config(t_mids: tuple[int, ...], seeds: tuple[int, ...]) -> FluxConfig:
    """The toy bank settings: 2 prefix steps on a 50-step schedule, every train and test layout."""
    return FluxConfig(t_mids=t_mids, t_mid=t_mids[0], prefix_steps=2, tail_steps=1, seeds=seeds, batch_size=4)


def fill(ldm: Path, vae: Path, dataset: Path, bank: Path, cfg: FluxConfig) -> int:
    """Insert the missing midpoints of every layout of `cfg.splits`; rows written."""
    from radiodiff.artifacts.denoiser import load_ldm
    from radiodiff.stages.bank import fill_bank, load_scenes

    model, _, condition = load_ldm(ldm, vae)
    return fill_bank(model, ldm, bank, load_scenes(dataset, cfg.splits), cfg, condition.channels)


def die_in_write(number: int) -> None:
    """Make the `number`-th part write stop halfway with a SIGKILL (a torn temporary file)."""
    import io

    import pyarrow.parquet as pq

    from tests.fault_scripts.harness import torn_write

    real_write, calls = pq.write_table, []

    def write_table(table, where, **kwargs):
        calls.append(where)
        if len(calls) == number:
            buffer = io.BytesIO()
            real_write(table, buffer, **kwargs)
            torn_write(Path(where), buffer.getvalue())
        real_write(table, where, **kwargs)

    pq.write_table = write_table  # bank/parts.py looks it up on the module at each write


def die_after_publish(number: int) -> None:
    """Make the process die once the `number`-th part is published, before it is committed."""
    import radiodiff.bank.commit as commit
    from tests.fault_scripts.harness import die_now

    real_write, calls = commit.write_part, []

    def write_part(*args, **kwargs):
        path = real_write(*args, **kwargs)
        calls.append(path)
        if len(calls) == number:
            die_now()
        return path

    commit.write_part = write_part  # publish_part looks it up on the module at each write


def main() -> None:
    import torch

    parser = argparse.ArgumentParser()
    for name in ("ldm", "vae", "dataset", "bank"):
        parser.add_argument(name, type=Path)
    parser.add_argument("--t-mids", type=int, nargs="+", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    dying = parser.add_mutually_exclusive_group()
    dying.add_argument("--die-in-write", type=int)
    dying.add_argument("--die-after-publish", type=int)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.die_in_write is not None:
        die_in_write(args.die_in_write)
    if args.die_after_publish is not None:
        die_after_publish(args.die_after_publish)
    written = fill(args.ldm, args.vae, args.dataset, args.bank, flux_config(tuple(args.t_mids), tuple(args.seeds)))
    print(f"written {written}", flush=True)


if __name__ == "__main__":
    main()
