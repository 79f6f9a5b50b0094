"""``python -m cysoftmax.bench``: see :mod:`cysoftmax.bench`."""

import sys

from .cli import main

sys.exit(main())
