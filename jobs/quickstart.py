"""Ray job entrypoint: `ray job submit --working-dir . -- python -P jobs/quickstart.py ...`.

Thin by design: the arguments are exactly those of `sslray quickstart`.
"""

import sys

from sslray.cli import main

if __name__ == "__main__":
    sys.exit(main(["quickstart", *sys.argv[1:]]))
