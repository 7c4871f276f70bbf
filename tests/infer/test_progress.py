"""The progress line: partitions, tiles/s, and an ETA by tiles or by partitions."""

import io

from sslray.infer.progress import Progress, _duration


def test_the_line_counts_partitions_and_tiles_and_estimates_by_tiles_when_the_total_is_known():
    progress = Progress(4, total_tiles=100, every_s=3600, stream=io.StringIO())
    progress.add_tiles(50)
    progress.unit_done()
    line = progress.line()
    assert line.startswith("embed: 1/4 partitions, 50 tiles, ") and "tiles/s" in line and "ETA" in line


def test_a_resumed_job_estimates_from_the_partitions_this_run_finished():
    progress = Progress(10, done_units=6, every_s=3600, stream=io.StringIO())
    assert "ETA" not in progress.line()  # nothing finished by this run yet: no guess
    progress.unit_done()
    assert "7/10 partitions" in progress.line() and "ETA" in progress.line()


def test_a_log_file_gets_whole_lines_and_durations_read_as_minutes_or_hours():
    stream = io.StringIO()
    progress = Progress(2, every_s=0, stream=stream)
    progress.add_tiles(3)
    progress.close()
    assert stream.getvalue().count("\n") == 2 and "\r" not in stream.getvalue()
    assert _duration(75) == "1m15s" and _duration(3 * 3600 + 120) == "3h02m"
