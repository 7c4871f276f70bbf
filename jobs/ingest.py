"""Ray job entrypoint: `ray job submit --working-dir . -- python -P jobs/ingest.py ...`.

Thin by design: the arguments are exactly those of `sslray ingest`.
"""

import sys

from sslray.cli import main

if __name__ == "__main__":
    sys.exit(main(["ingest", *sys.argv[1:]]))
