"""The labels CSV: rows parsed and normalised, every mistake refused with the file, line and path."""

import pytest

from sslray.data.labels_csv import LabelsError, inside_source, read_labels_csv


def _csv(tmp_path, text: str, encoding: str = "utf-8"):
    path = tmp_path / "labels.csv"
    path.write_bytes(text.encode(encoding))
    return path


def test_rows_keep_core_columns_and_pass_the_rest_to_the_manifest(tmp_path):
    rows = read_labels_csv(_csv(tmp_path, "path,label,group,patient_id\n./a/x.png,t,P1,7\nb\\y.png,,,\n"))
    assert [(r.line, r.path, r.label, r.group, r.split) for r in rows] == [(2, "a/x.png", "t", "P1", None),
                                                                          (3, "b/y.png", None, None, None)]
    assert rows[0].extra == {"patient_id": "7"} and rows[1].extra == {"patient_id": None}


@pytest.mark.parametrize("path", ["../x.png", "/etc/passwd", "a/../../x.png", ".."])
def test_paths_leaving_src_are_refused_with_the_line(tmp_path, path):
    with pytest.raises(LabelsError, match=f"line 3: path {path!r} is outside the source folder"):
        inside_source(path, tmp_path / "labels.csv", 3)


@pytest.mark.parametrize("text, message", [
    ("path\na.png\n", r"missing column\(s\) \['label'\]"),
    ("path,label,tile_id\na.png,t,1\n", r"column\(s\) \['tile_id'\] are set by sslray"),
    ("path,label\n", "lists no images"),
    ("path,label\n ,t\n", "line 2: empty path"),
    ("path,label\na.png,t\nb.png,u\n./a.png,v\n", r"'a.png' is listed twice with two labels \('t' and 'v'\), "
                                                  "on lines 2 and 4"),
])
def test_mistakes_are_named(tmp_path, text, message):
    with pytest.raises(LabelsError, match=message):
        read_labels_csv(_csv(tmp_path, text))


def test_encoding_latin1_is_refused_and_a_byte_order_mark_is_read(tmp_path):
    with pytest.raises(LabelsError, match="is not UTF-8 text.*iconv"):
        read_labels_csv(_csv(tmp_path, "path,label\nä.png,t\n", "latin1"))
    assert read_labels_csv(_csv(tmp_path, "\ufeffpath,label\na.png,t\n"))[0].path == "a.png"
    with pytest.raises(LabelsError, match="does not exist"):
        read_labels_csv(tmp_path / "nowhere.csv")
