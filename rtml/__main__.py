"""``python -m rtml``: the ``rtml`` command of this interpreter's installation."""

from rtml.cli import main

main()
