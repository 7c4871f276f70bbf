"""`sslray store info`: what a published tile store holds (its checksums are tested in tests/artifacts/test_checksums.py)."""

import json

from sslray.cli import main
from sslray.data.integrity import store_summary


def test_info_summarises_the_store(tiny_store, capsys):
    summary = store_summary(tiny_store.url)
    assert summary["tiles"] == 96 and summary["groups"]["group"] == 24
    assert set(summary["labels"]) == {"round", "spindle", "punctate", "fragmented"}
    assert summary["bytes_on_storage"] > 0 and len(summary["channels"]) == 2
    assert main(["store", "info", tiny_store.url]) == 0
    assert json.loads(capsys.readouterr().out)["tiles"] == 96
