"""``python -m lmmformula``: the ``lmmformula`` command; without arguments, ``lmmformula example``."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["example"]))
