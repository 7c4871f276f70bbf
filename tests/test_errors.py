"""``user_message``: one line for an input problem, even when Ray wrapped it; None for a bug."""

from __future__ import annotations

import pytest

from sslray.data.store import StoreError
from sslray.errors import user_message


def test_plain_user_errors_give_their_message():
    assert user_message(StoreError("s3://b/x: damaged shard")) == "s3://b/x: damaged shard"
    assert user_message(KeyError("no label column 'y'")) == "no label column 'y'"


def test_bugs_give_none_so_the_traceback_is_kept():
    assert user_message(RuntimeError("boom")) is None
    assert user_message(TypeError("unsupported operand")) is None


def test_a_cause_inside_a_bug_wrapper_is_found():
    try:
        try:
            raise FileNotFoundError("checkpoint /x is missing")
        except FileNotFoundError as inner:
            raise RuntimeError("stage failed") from inner
    except RuntimeError as err:
        assert user_message(err) == "checkpoint /x is missing"


def test_an_error_known_only_as_text_in_a_trace_is_dug_out():
    class FakeRayError(Exception):  # Ray's wrappers carry the original only as a formatted trace
        __module__ = "ray.exceptions"

    trace = ("\x1b[36mray::MapBatches(read)()\x1b[39m (pid=1)\n  File \"x.py\", line 3, in read\n"
             "sslray.data.store.StoreError: /s/tiles.zarr/c/1/0/0/0: damaged\n\nThe above exception was ...")
    assert user_message(FakeRayError(trace)) == "/s/tiles.zarr/c/1/0/0/0: damaged"


@pytest.mark.ray
def test_an_error_raised_in_a_ray_data_task_comes_back_as_one_line(ray_session):
    def read(batch):
        raise StoreError("/s/tiles.zarr/c/2/0/0/0: chunk checksum mismatch")

    with pytest.raises(Exception) as info:
        ray_session.data.range(2).map_batches(read).materialize()
    assert user_message(info.value) == "/s/tiles.zarr/c/2/0/0/0: chunk checksum mismatch"


def test_urls_in_messages_are_redacted():
    message = user_message(ValueError("cannot reach s3://AKIAXXX:SECRETKEY@bucket/x"))
    assert "SECRETKEY" not in message and "bucket/x" in message
