"""Features made by other tools (HistoSSLscaling, CLAM, TRIDENT, tables) as sslray embeddings tables.

``sslray features import SRC OUT`` reads per-slide feature files (``readers``) and publishes
the embeddings table ``sslray embed`` would have written (``run``), so sslray's evaluation
(linear probe, MIL, survival) runs on them without a tile store (docs/data_contracts.md).
Importing this package does not import Ray.
"""

from sslray.features.readers import FORMATS, Slide, Source, detect_format, feature_files, read_slides
from sslray.features.run import ImportConfig, run_import

__all__ = ["FORMATS", "ImportConfig", "Slide", "Source", "detect_format", "feature_files", "read_slides",
           "run_import"]
