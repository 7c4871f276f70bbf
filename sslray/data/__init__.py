"""Data: source readers, ingest, the Ray Data reader of a tile store, view transforms.

Importing this package imports nothing else: methods use ``sslray.data.transforms`` (torch only)
and must import without Ray, zarr or fsspec. The tile store format itself is in
``sslray.artifacts`` (``sslray.data.store`` re-exports its names).
"""
