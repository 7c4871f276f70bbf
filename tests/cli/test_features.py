"""``sslray features import``: flags become ImportConfig keys, the command runs end to end in a
fresh process, and an input problem is one line naming the file."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sslray.artifacts.embeddings import EmbeddingsTable
from sslray.cli import build_parser, main
from sslray.cli.features import flag_overrides
from tests.conftest import ROOT
from tests.features.test_readers import write_histossl


def test_the_command_imports_a_histossl_folder_end_to_end(tmp_path):
    write_histossl(tmp_path / "phikon", {"s1": 3, "s2": 2})
    (tmp_path / "meta.csv").write_text("slide_id,label\ns1,a\ns2,b\n")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "SSLRAY_PARENT_RUN_ID")}
    done = subprocess.run([sys.executable, "-m", "sslray.cli", "features", "import", str(tmp_path / "phikon"),
                           str(tmp_path / "emb"), "--metadata", str(tmp_path / "meta.csv"),
                           f"run_dir={tmp_path / 'runs'}"], capture_output=True, text=True, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"wrote 5 tiles of 2 slides (histossl, dim 6) to {tmp_path / 'emb'}"
    table = EmbeddingsTable.read(str(tmp_path / "emb"))
    assert table.table.num_rows == 5 and sorted(set(table.table.column("label").to_pylist())) == ["a", "b"]
    assert (tmp_path / "runs" / "mlflow.db").exists()


def test_flags_come_between_the_positionals_and_overrides_and_become_config_keys():
    args = build_parser().parse_args(["features", "import", "SRC", "--format", "table", "OUT", "rows_per_part=10",
                                      "--slide-id-column", "001", "--overwrite"])
    assert flag_overrides(args) == ['src="SRC"', 'out="OUT"', 'format="table"', 'slide_id_column="001"',
                                    "overwrite=true"]
    assert args.overrides == ["rows_per_part=10"] and args.action == "import"


def test_an_unset_flag_is_no_override():
    args = build_parser().parse_args(["features", "import", "SRC", "OUT"])
    assert flag_overrides(args) == ['src="SRC"', 'out="OUT"']


def test_an_empty_src_is_one_line_naming_it(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    assert main(["features", "import", str(tmp_path / "src"), str(tmp_path / "emb"),
                 f"run_dir={tmp_path}"]) == 2
    assert capsys.readouterr().err == f"sslray features: error: no feature files in {tmp_path / 'src'} (looked for " \
        "histossl: *.npy, */features.npy; h5: *.h5, h5_files/*.h5, features_*/*.h5; table: *.parquet, *.csv)\n"
    assert not (tmp_path / "emb").exists()


@pytest.mark.parametrize("argv", [["features", "--help"], ["features", "import", "--help"]])
def test_help_has_examples(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "example" in out and "sslray features import" in out
