"""``python -m sslray.cli``: the ``sslray`` command without the console script."""

import sys

from sslray.cli import main

sys.exit(main())
