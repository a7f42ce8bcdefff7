"""A forest fire: how much of a forest burns, given its density and how easily fire spreads.

The model of NetLogo's classic "Fire" example, as a small program of the kind
OpenMOLE explores with ``SystemExecTask``: it takes its parameters on the
command line and writes its result to a file. Trees stand on a square grid
with probability ``--density``; the fire starts in every tree of the left
edge, and a burning tree sets each of its four neighbours alight with
probability ``--spread``. The result is the fraction of the trees that burned.

    python3 fire.py --density 0.6 --spread 0.9 --seed 42 --output burned.txt

Only Python's standard library: any ``python3`` runs it.
"""

from __future__ import annotations

import argparse
import random
from collections import deque
from pathlib import Path


def burn(density: float, spread: float, seed: int, size: int = 60) -> float:
    """The fraction of the trees that burn (0.0 when there is no tree)."""
    rng = random.Random(seed)
    trees = {(x, y) for x in range(size) for y in range(size) if rng.random() < density}
    if not trees:
        return 0.0
    burning = deque(tree for tree in trees if tree[0] == 0)
    burned = set(burning)
    while burning:
        x, y = burning.popleft()
        for neighbour in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)):
            if neighbour in trees and neighbour not in burned and rng.random() < spread:
                burned.add(neighbour)
                burning.append(neighbour)
    return len(burned) / len(trees)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--density", type=float, required=True, help="probability of a tree")
    parser.add_argument("--spread", type=float, required=True, help="probability of spreading")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random numbers")
    parser.add_argument("--size", type=int, default=60, help="side of the grid, in cells")
    parser.add_argument("--output", type=Path, default=Path("burned.txt"), help="result file")
    args = parser.parse_args()
    fraction = burn(args.density, args.spread, args.seed, args.size)
    args.output.write_text(f"{fraction}\n")
    print(f"density {args.density:.2f}, spread {args.spread:.2f}: {fraction:.1%} burned")


if __name__ == "__main__":
    main()
