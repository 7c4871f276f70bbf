"""A tiny embeddings table and plate map for the profile stage and CLI tests: 2 plates x 6 wells x 2 sites."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sslray import storage

CHANNELS = ["DNA", "Mito"]
BLOCK = 4
WELLS = [f"r01c{c:02d}" for c in range(1, 7)]  # A01..A06: A01-A03 are DMSO, the rest two compounds


def write_embeddings(path, per_channel_info: bool = True) -> str:
    """Plates P1, P2 (one folder each), 6 wells x 2 sites x 3 tiles, 2 channel blocks of 4."""
    rng = np.random.default_rng(0)
    rows = {"tile_id": [], "source": [], "image_id": [], "well": [], "site": [], "tissue_fraction": []}
    for plate in ("P1", "P2"):
        for well in WELLS:
            for site in ("01", "02"):
                for tile in range(3):
                    rows["tile_id"].append(f"{plate}{well}{site}{tile}")
                    rows["source"].append(f"{plate}/{well}f{site}p01-ch1sk1fk1fl1.tiff")
                    rows["image_id"].append(f"{plate}/{well}f{site}")
                    rows["well"].append(well)
                    rows["site"].append(site)
                    rows["tissue_fraction"].append(0.0 if (plate, well) == ("P2", "r01c06") else 0.5)
    n = len(rows["tile_id"])
    table = pa.table(rows).append_column("embedding", pa.FixedSizeListArray.from_arrays(
        pa.array(rng.normal(size=n * BLOCK * 2).astype(np.float32)), BLOCK * 2))
    storage.ensure_folder(str(path), "table")
    pq.write_table(table, f"{path}/part-0.parquet")
    info = {"kind": "embeddings", "checkpoint": str(path / "no_checkpoint"), "store": "s", "n_rows": n,
            "dim": BLOCK * 2, **({"per_channel": True, "channels": CHANNELS} if per_channel_info else {})}
    storage.mark_complete(str(path), info)
    return str(path)


def write_plate_map(path, plates=("P1", "P2"), wells=WELLS) -> str:
    lines = ["plate,well,perturbation,control,moa"]
    for plate in plates:
        for i, well in enumerate(wells):
            compound = "DMSO" if i < 3 else f"cmpd{i % 2}"
            lines.append(f"{plate},{well},{compound},{i < 3},{'' if i < 3 else 'moa' + str(i % 2)}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)
