"""``python -m liqshell``: the ``liqshell`` command."""

from __future__ import annotations

from liqshell.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
