"""Ray job entrypoint: `ray job submit --working-dir . -- python -P jobs/pretrain.py ...`.

Thin by design: the arguments are exactly those of `sslray pretrain`.
"""

import sys

from sslray.cli import main

if __name__ == "__main__":
    sys.exit(main(["pretrain", *sys.argv[1:]]))
