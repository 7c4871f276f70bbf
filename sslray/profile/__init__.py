"""Image-based profiling: tile embeddings -> site / well / perturbation profiles -> normalised profiles.

The profiles table (``profiles.py``) is the hand-over format: ``Metadata_*`` columns plus one
numeric column per feature, the shape pycytominer, copairs, pandas and AnnData read as it is.
``wells.py`` names wells one way, ``plate_map.py`` joins the plate map, ``aggregate.py`` averages
tiles into profiles, ``normalize.py`` holds the named normalisation steps, ``run.py`` is the
``sslray profile`` stage (docs/data_contracts.md, "Profiles table").
"""
