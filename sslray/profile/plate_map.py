"""The plate map and the tiles' own metadata, as ``Metadata_*`` columns keyed by plate + well.

A plate map is a CSV with one row per well: ``plate``, ``well`` and any of ``perturbation``,
``control``, ``batch``, ``moa``, ``target``, ... (pycytominer's ``Metadata_``-prefixed names are
accepted too). Wells are matched after ``wells.normalise_well``, so ``C3`` in the map meets
``r03c03`` from an Opera file name. The embeddings table carries what the ingest knew (the
manifest's ``plate``, ``well``, ``site``, ``batch``, ``perturbation``, ...); without a ``plate``
column the plate is the folder holding each tile's source file, as JUMP keeps one folder per plate.

A plate map that names a well with no tiles, or tiles in a well the map does not list, is an error
naming the wells: either means the map and the images are not of the same screen, and a silent
inner join would quietly profile part of it.
"""

from __future__ import annotations

import logging

import pandas as pd

from sslray.profile.profiles import META_PREFIX, PLATE, SITE, WELL, read_csv
from sslray.profile.wells import normalise_well

log = logging.getLogger(__name__)

KEY = [PLATE, WELL]
RESERVED = {"plate": PLATE, "well": WELL, "site": SITE}
# embeddings columns that describe a tile, not its well: never carried into a profile's metadata
TILE_COLUMNS = {"tile_id", "source", "image_id", "x", "y", "level", "mpp", "tissue_fraction", "embedding",
                "checkpoint", "plate", "well", "site"}


def metadata_name(column: str) -> str:
    """``plate`` / ``Metadata_plate`` -> ``Metadata_Plate``; ``moa`` / ``Metadata_moa`` -> ``Metadata_moa``."""
    bare = column[len(META_PREFIX):] if column.startswith(META_PREFIX) else column
    return RESERVED.get(bare.strip().lower(), META_PREFIX + bare.strip())


def read_plate_map(url: str) -> pd.DataFrame:
    """The plate map CSV at ``url`` as ``Metadata_*`` columns, wells normalised, one row per plate + well."""
    raw = read_csv(url, dtype={"plate": str, "Metadata_Plate": str, "Metadata_plate": str})
    renamed = {c: metadata_name(str(c)) for c in raw.columns}
    clash = sorted({n for n in renamed.values() if list(renamed.values()).count(n) > 1})
    if clash:
        raise ValueError(f"plate map {url}: columns {sorted(c for c, n in renamed.items() if n in clash)} "
                         f"all mean {clash[0]}")
    table = raw.rename(columns=renamed)
    missing = [bare for bare, name in (("plate", PLATE), ("well", WELL)) if name not in table.columns]
    if missing:
        raise ValueError(f"plate map {url} has no {' or '.join(missing)} column (columns: "
                         f"{', '.join(map(str, raw.columns))}); it is keyed by plate + well")
    if SITE in table.columns:
        raise ValueError(f"plate map {url} has a site column; a plate map is keyed by plate + well, the site "
                         "comes from the tiles")
    table[PLATE] = table[PLATE].astype(str)
    table[WELL] = [_well(value, url, i) for i, value in enumerate(table[WELL])]
    duplicated = table[table.duplicated(KEY, keep=False)]
    if len(duplicated):
        pairs = sorted({f"{p}/{w}" for p, w in zip(duplicated[PLATE], duplicated[WELL])})
        raise ValueError(f"plate map {url} lists plate/well {pairs[:10]} more than once; one row per well")
    return table.reset_index(drop=True)


def _well(value: object, url: str, row: int) -> str:
    try:
        return normalise_well(value)
    except ValueError as err:
        raise ValueError(f"plate map {url}, row {row + 2}: {err}") from None


def tile_metadata(table: pd.DataFrame, url: str) -> pd.DataFrame:
    """Per tile: ``Metadata_Plate``, ``Metadata_Well``, ``Metadata_Site`` and the table's other grouping
    columns as ``Metadata_<name>`` (``batch`` -> ``Metadata_batch``)."""
    if "well" not in table.columns:
        raise ValueError(f"{url} has no 'well' column; ingest with a channel_pattern naming (?P<well>...) or a "
                         "labels CSV with a well column")
    meta = pd.DataFrame({PLATE: _plates(table, url), WELL: _tile_wells(table["well"], url),
                         SITE: _sites(table, url)}, index=table.index)
    for column in table.columns:
        if column not in TILE_COLUMNS:
            meta[metadata_name(str(column))] = table[column].to_numpy()
    return meta


def _plates(table: pd.DataFrame, url: str) -> pd.Series:
    if "plate" in table.columns:
        return table["plate"].astype(str)
    if "source" not in table.columns:
        raise ValueError(f"{url} has neither a 'plate' nor a 'source' column to tell the plate from")
    folders = table["source"].astype(str).str.rsplit("/", n=1).str[0].where(table["source"].str.contains("/"))
    if folders.isna().any():
        bad = table["source"][folders.isna()].iloc[0]
        raise ValueError(f"{url} has no 'plate' column and source {bad!r} is in no folder; keep one folder per plate "
                         "(JUMP's layout) or ingest with a plate column")
    plates = folders.str.rsplit("/", n=1).str[-1]
    log.info("%s: no plate column; the plate is the folder of each source file (%s)", url,
             ", ".join(sorted(plates.unique())[:5]))
    return plates


def _tile_wells(wells: pd.Series, url: str) -> list[str]:
    names = {value: None for value in wells.unique()}
    for value in names:
        try:
            names[value] = normalise_well(value)
        except ValueError as err:
            raise ValueError(f"{url}: {err}") from None
    return [names[value] for value in wells]


def _sites(table: pd.DataFrame, url: str) -> pd.Series:
    if "site" in table.columns:
        return table["site"].astype(str)
    if "image_id" in table.columns:
        return table["image_id"].astype(str)
    raise ValueError(f"{url} has neither a 'site' nor an 'image_id' column to group tiles into sites")


def check_wells(plate_map: pd.DataFrame, tile_wells: pd.DataFrame, url: str) -> None:
    """Every plate-map well has tiles and every well with tiles has a plate-map row; else a ValueError
    listing the wells on each side."""
    mapped = set(zip(plate_map[PLATE], plate_map[WELL]))
    tiled = set(zip(tile_wells[PLATE], tile_wells[WELL]))
    if mapped - tiled:
        extra = sorted(f"{p}/{w}" for p, w in mapped - tiled)
        plates = sorted({p for p, _ in tiled})
        raise ValueError(f"plate map {url} names {len(extra)} plate/well(s) with no tiles: {extra[:10]}; the tiles "
                         f"are of plate(s) {plates[:5]}")
    if tiled - mapped:
        unmapped = sorted(f"{p}/{w}" for p, w in tiled - mapped)
        raise ValueError(f"plate map {url} has no row for {len(unmapped)} plate/well(s) with tiles: {unmapped[:10]}")


def join_plate_map(profiles: pd.DataFrame, plate_map: pd.DataFrame) -> pd.DataFrame:
    """``profiles`` with the plate map's columns added by plate + well; the map's value wins over a
    column of the same name that came from the tiles."""
    overlap = [c for c in plate_map.columns if c in profiles.columns and c not in KEY]
    if overlap:
        log.info("the plate map's %s replace the embeddings table's", overlap)
    joined = profiles.drop(columns=overlap).merge(plate_map, on=KEY, how="left", validate="many_to_one")
    meta = [c for c in joined.columns if str(c).startswith(META_PREFIX)]
    return joined[meta + [c for c in joined.columns if c not in meta]]
