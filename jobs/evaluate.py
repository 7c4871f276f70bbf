"""Ray job entrypoint: `ray job submit --working-dir . -- python -P jobs/evaluate.py ...`.

Thin by design: the arguments are exactly those of `sslray evaluate`.
"""

import sys

from sslray.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
