"""sslray: self-supervised learning for microscopy and pathology images on Ray.

Data flows one way: ingest -> tile store -> pretrain -> embed -> evaluate.
Each stage lives in its own sub-package; `sslray.cli` is the command line.
"""

__version__ = "0.1.0"
