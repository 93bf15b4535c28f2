"""`python -m l2lcli ...` (and `torchrun --nproc_per_node=N -m l2lcli meta-train ...`): the `l2l` command."""

from .cli import main

main()
