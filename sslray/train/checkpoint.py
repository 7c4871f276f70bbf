"""Backward-compatible names for the checkpoint format, which lives in ``sslray.artifacts.checkpoint``
(files) and ``sslray.artifacts.checkpoint_meta`` (``CheckpointMeta``). Re-exports only."""

from sslray.artifacts.checkpoint import (  # noqa: F401
    ENCODER_FILE,
    FORMAT_VERSION,
    META_FILE,
    TRAIN_STATE_FILE,
    CheckpointError,
    CheckpointMeta,
    load_encoder,
    load_train_state,
    read_meta,
    save_checkpoint,
)
