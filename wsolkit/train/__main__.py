"""``python -m wsolkit.train``: see :func:`wsolkit.train.cli.main`."""

from wsolkit.train.cli import main

main()
