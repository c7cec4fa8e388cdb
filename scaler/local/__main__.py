"""``python -m scaler.local [options]``: serve the local Machines API as ``scaler local-api`` does,
without importing the rest of the scaler (a harness running another scaler build against
this API does not depend on the scheduler's modules importing)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from scaler.local.cli import add_arguments, run


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``scaler local-api``'s options and serve."""
    parser = argparse.ArgumentParser(prog="python -m scaler.local",
                                     description="serve the local Machines API")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
