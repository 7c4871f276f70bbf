"""Ray job entrypoint: `ray job submit --working-dir . -- python -P jobs/aggregate.py ...`.

Thin by design: the arguments are exactly those of `sslray aggregate`.
"""

import sys

from sslray.cli import main

if __name__ == "__main__":
    sys.exit(main(["aggregate", *sys.argv[1:]]))
