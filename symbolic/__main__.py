"""``python -m symbolic``: print and verify the derivation (see :mod:`symbolic.derivation`)."""

import sys

from .derivation import main

sys.exit(main())
