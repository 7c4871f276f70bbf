"""Ray job entrypoint: `ray job submit --working-dir . -- python -P jobs/embed.py ...`.

Thin by design: the arguments are exactly those of `sslray embed`.
"""

import sys

from sslray.cli import main

if __name__ == "__main__":
    sys.exit(main(["embed", *sys.argv[1:]]))
