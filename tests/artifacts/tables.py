"""Publishing a parquet table as a stage would (parts, then ``_SUCCESS`` with its kind), for the table tests."""

import pyarrow as pa
import pyarrow.parquet as pq

from sslray import storage


def publish_table(table: pa.Table, url, kind: str, **info) -> str:
    url = str(url)
    staging = storage.begin_output(url, False, what=kind, kind=kind)
    pq.write_table(table, f"{staging}/part-0.parquet")
    storage.publish_output(staging, url, {"kind": kind, "n_rows": table.num_rows, **info})
    return url


def vectors(rows: list[list[float]]) -> pa.FixedSizeListArray:
    """A fixed-size list column of float32, as the stages write ``embedding``."""
    return pa.FixedSizeListArray.from_arrays(pa.array([v for row in rows for v in row], pa.float32()), len(rows[0]))
