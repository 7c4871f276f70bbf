"""Ray job entrypoint: `ray job submit --working-dir . -- python -P jobs/profile.py ...`.

Thin by design: the arguments are exactly those of `sslray profile`.
"""

import sys

from sslray.cli import main

if __name__ == "__main__":
    sys.exit(main(["profile", *sys.argv[1:]]))
