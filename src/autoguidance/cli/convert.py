"""`autoguidance convert FILE.pkl OUT.safetensors`: an EDM2 network pickle as this package's checkpoint.

The pickle is read once by the restricted unpickler (nothing in it runs); the checkpoint (safetensors +
JSON metadata) then loads with no unpickler at all and gives bit-identical outputs. The metadata keep
EDM2's constructor arguments, its encoder (a latent network's decoder needs it) and the snapshot's other
entries (loss, dataset arguments) as inert JSON, with the source file's SHA-256.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import UserInputError
from ..io import atomic
from ..io.cache import file_sha256
from ..io.edm2 import checkpoint_metadata, load_edm2_pickle
from ..io.networks import is_pickle, save_network


@click.command("convert")
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
def convert(src: str, dst: str) -> None:
    """Convert an EDM2 network pickle SRC into a checkpoint DST (.safetensors) that loads without
    unpickling."""
    if not Path(src).is_file():
        raise UserInputError(f"{src} does not exist or is not a file")
    if not is_pickle(src):
        raise UserInputError(f"{src} is not a pickle (EDM2 network files are)")
    if Path(dst).suffix != ".safetensors":
        raise UserInputError(f"the output {dst} should end in .safetensors")
    atomic.check_file(dst, "the output")
    ckpt = load_edm2_pickle(src)
    source = {"path": str(Path(src).resolve()), "sha256": file_sha256(Path(src))}
    save_network(dst, ckpt.net, {**checkpoint_metadata(ckpt), "converted_from": source})
    click.echo(f"wrote {dst} ({sum(p.numel() for p in ckpt.net.parameters()):,} parameters)")
