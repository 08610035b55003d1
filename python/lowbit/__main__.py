"""``python -m lowbit``: the ``lowbit`` command (see :mod:`lowbit.cli`)."""
import sys

from .cli import main

sys.exit(main())
