"""The inspection subcommands: `sslray methods` lists every method and aggregator; `sslray store`
prints a store's summary or verifies it, exit 1 when damaged."""

import json
import shutil

from sslray.cli import main


def test_methods_lists_one_line_per_method(capsys):
    from sslray.methods import METHODS

    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    names = [line.split()[0] for line in lines]
    assert names[:len(METHODS.names())] == METHODS.names() and len(set(names)) == len(names)
    assert all("docs/methods/" in line for line in lines)  # each names its page
    assert "docs/methods/spot_aggregator.md" in lines[names.index("spot_dino")]


def test_methods_lists_all_eight(capsys):
    assert main(["methods"]) == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines()}
    assert listed == {"dino", "ibot", "mae", "simclr", "vicregl", "mpcs", "channel_agnostic_dino", "spot_dino"}


def test_store_info_prints_the_summary_as_json(tiny_store, capsys):
    assert main(["store", "info", tiny_store.url]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["tiles"] == 96 and summary["url"] == tiny_store.url


def test_store_verify_exits_0_when_intact_and_1_listing_problems_when_damaged(tiny_store, tmp_path, capsys):
    assert main(["store", "verify", tiny_store.url]) == 0
    assert capsys.readouterr().out.strip() == f"{tiny_store.url}: OK"
    store = tmp_path / "copy"
    shutil.copytree(tiny_store.url, store)
    (store / "manifest.parquet").unlink()
    (store / "stray.bin").write_bytes(b"x")
    assert main(["store", "verify", str(store)]) == 1
    captured = capsys.readouterr()
    assert "manifest.parquet: missing" in captured.err and "stray.bin: unexpected file" in captured.err
    assert captured.out.strip() == f"{store}: DAMAGED, 2 problem(s)"
