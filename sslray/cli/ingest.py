"""``sslray ingest SRC DEST [--config FILE.yaml] [flags] [key=value ...]``.

Loaded like every other stage: ``load_config(IngestConfig, --config, overrides)``. Each flag is a
shortcut for the IngestConfig key of its name (``--tile-size 224`` is ``tile_size=224``) and is
applied after the YAML; explicit ``key=value`` overrides come last and win.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from typing import Any

from sslray.cli.parsing import add_overrides
from sslray.data.readers import MAX_PIXELS


def configure(p: argparse.ArgumentParser) -> None:
    p.intermixed = True  # flags may come between SRC DEST and the key=value overrides
    p.add_argument("src", help="folder of images (PNG, JPEG, TIFF, slides, HDF5), or one such file")
    p.add_argument("out", metavar="dest", help="tile store URL: a local path or s3://bucket/prefix")
    p.add_argument("--config", help="YAML IngestConfig (see configs/ingest/); flags and key=value override it")
    _shortcuts(p)
    add_overrides(p)


def _shortcuts(p: argparse.ArgumentParser) -> None:
    """The flags; every default is None (unset) so a flag never hides a value from --config."""
    p.add_argument("--tile-size", type=int, help="tile edge in pixels (default 224)")
    p.add_argument("--stride", type=int, help="grid step in pixels (default: the tile size, tiles side by side; "
                                              "smaller overlaps them; whole slides: pixels at the target mpp)")
    p.add_argument("--labels", help="CSV with columns path,label[,group][,split] (paths relative to SRC)")
    p.add_argument("--on-error", choices=["stop", "skip"],
                   help="stop at the first bad file (default) or skip it and list it in ingest_report.json")
    p.add_argument("--layout", choices=["files", "channel-folders", "channel-files"],
                   help="files: one image file per field (default); channel-folders: one folder per field "
                        "holding one single-channel file per marker; channel-files: single-channel files side by "
                        "side, grouped into fields by --channel-pattern (Cell Painting)")
    p.add_argument("--channel-pattern",
                   help="channel-files: regex on file names with a (?P<channel>...) group; other named groups "
                        "(well, site, plate...) become manifest columns, e.g. "
                        "'(?P<well>r\\d+c\\d+)f(?P<site>\\d+)p\\d+-ch(?P<channel>\\d+)'")
    p.add_argument("--channel-names",
                   help="rename channel keys: KEY=NAME,... (e.g. 1=DNA,2=ER) or a CSV file with columns key,name")
    p.add_argument("--format", choices=["auto", "image", "slide", "hdf5"],
                   help="reader: auto (from the file name, default), image (PNG/JPEG/TIFF/OME-TIFF/QPTIFF/NPY), "
                        "slide (whole-slide pyramid via tiffslide), hdf5 (Images + Names)")
    p.add_argument("--channels", help="comma-separated channel names (channel-folders: the markers to keep, in order)")
    p.add_argument("--mpp", type=float, help="whole slides: tile at this many microns per pixel "
                                             "(also reads .tif files as slides)")
    p.add_argument("--magnification", type=float, help="whole slides: tile at this objective power instead (e.g. 20)")
    p.add_argument("--mpp-override", type=float, help="whole slides: level-0 mpp for slides without metadata")
    p.add_argument("--min-tissue", type=float, help="whole slides: minimum tissue fraction (0.25)")
    p.add_argument("--foreground-channel", help="compute each tile's foreground fraction on this channel "
                                                "(e.g. DAPI) instead of the channel mean")
    p.add_argument("--float-max", help="float images: value(s) mapped to full scale, one or comma-separated per channel")
    p.add_argument("--log1p", action="store_true", default=None, help="float images: apply log1p before scaling")
    p.add_argument("--clip-percentiles", help="LOW,HIGH (e.g. 0.5,99.5): map each channel's dataset percentiles "
                                              "(from a sample of images) to 0 and full scale, clipping outside")
    p.add_argument("--magnification-groups", action="store_true", default=None,
                   help="BreakHis-style data: read each image's magnification from a 40X folder or a _40x_ file-name "
                        "token and group the same field across magnifications (manifest columns magnification, "
                        "field_id)")
    p.add_argument("--compression", choices=["lz4", "zstd"],
                   help="store codec: lz4 reads fastest (default), zstd is smaller (archives, slow links)")
    p.add_argument("--workers", type=int, help="parallel tiling tasks on the Ray cluster (default: one per CPU; "
                                               "0: in this process, without Ray)")
    p.add_argument("--max-pixels", type=int,
                   help=f"refuse whole images larger than this many pixels per plane (default {MAX_PIXELS:,} = "
                        "16384^2; a guard against decompression bombs; whole slides are read by region and exempt)")
    p.add_argument("--overwrite", action="store_true", default=None,
                   help="replace an existing tile store at DEST (and discard what an interrupted ingest left to "
                        "resume); a file or a folder that is not an sslray tile store is never replaced")


def run(args: argparse.Namespace) -> int:
    from sslray.config import load_config
    from sslray.data.ingest import IngestConfig, ingest_folder

    store = ingest_folder(load_config(IngestConfig, args.config, [*flag_overrides(args), *args.overrides]))
    print(f"wrote {len(store)} tiles ({', '.join(store.info.channels)}; {store.info.dtype}) to {store.url}")
    return 0


def flag_overrides(args: argparse.Namespace) -> list[str]:
    """SRC, DEST and every flag given, as ``key=value`` overrides (values JSON-quoted, so a regex stays text)."""
    from sslray.data.ingest import IngestConfig

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(IngestConfig)
             if getattr(args, f.name, None) is not None}
    return [f"{key}={json.dumps(_FLAG_VALUES.get(key, _same)(value), ensure_ascii=False)}"
            for key, value in given.items()]


def channel_names(value: str | None) -> dict[str, str] | None:
    """``1=DNA,2=ER`` or a CSV file with columns ``key,name``."""
    if not value:
        return None
    if "=" not in value:
        import csv

        with open(value, newline="") as handle:
            rows = list(csv.DictReader(handle))
        if not rows or not {"key", "name"} <= set(rows[0]):
            raise ValueError(f"--channel-names {value}: expected a CSV with columns key,name")
        return {row["key"]: row["name"] for row in rows}
    pairs = [item.split("=", 1) for item in value.split(",")]
    if any(len(pair) != 2 for pair in pairs):
        raise ValueError(f"--channel-names {value!r}: expected KEY=NAME,KEY=NAME or a CSV file")
    return dict(pairs)


def numbers(option: str, value: str | None) -> list[float] | None:
    """``1.5`` or ``0.5,99.5`` -> floats; anything else is an error naming the option."""
    if not value:
        return None
    try:
        return [float(v) for v in value.split(",")]
    except ValueError:
        raise ValueError(f"{option} {value!r}: expected a number or comma-separated numbers (e.g. 0.5,99.5)") from None


def _same(value: Any) -> Any:
    return value


_FLAG_VALUES: dict[str, Callable[[Any], Any]] = {  # flags whose text becomes a structured value
    "channel_names": channel_names,
    "channels": lambda value: value.split(",") if value else None,
    "float_max": lambda value: numbers("--float-max", value),
    "clip_percentiles": lambda value: numbers("--clip-percentiles", value),
}
