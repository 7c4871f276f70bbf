"""A deterministic synthetic Cell Painting screen: plates, batches, DMSO wells, compounds in MoAs.

The profiling quickstart and its tests need a screen whose answer is known: compounds grouped
into mechanisms of action (MoAs), each compound on plates of two batches, so that nearest
neighbours "not in the same batch" (NSB) are defined, and DMSO control wells on every plate for
the normalisation to fit on. A compound changes cell *morphology*, never brightness alone:

- ``dna_damage``: the nucleus breaks into 5-8 fragments (DNA);
- ``actin_stabilizer``: cells elongate and the cortical actin ring becomes stress fibres (AGP);
- ``mito_fission``: tubular mitochondria become puncta (Mito);
- ``nucleolar_stress``: the nucleoli merge into one large nucleolus (RNA), the ER turns granular.

Each effect keeps a channel's integrated intensity (fragments, puncta and fibres carry the
light of the structure they replace), so the effect is in shape and texture. The two compounds
of a MoA share its phenotype at two strengths (the fraction of cells that show it). What tracks
brightness is nuisance: a per batch and channel gain and background offset (the batch effect),
a per-plate gain, and per-well cell count, gain, background, defocus blur and camera noise,
drawn the same way for every condition. Per-well channel means therefore do not tell MoAs apart
across batches, while features of shape and texture do.

Written as JUMP names it: ``<plate>/rXXcYYfZZp01-chNsk1fk1fl1.tiff``, one 16-bit single-channel
TIFF per channel with the channel numbers of ``configs/ingest/cell_painting.yaml``, plus
``platemap.csv`` (plate, well, perturbation, control, batch, moa). A pure function of the seed:
the same spec writes byte-identical files.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sslray.data.synthetic import _gaussian_blur, _soft_ellipse

CHANNELS = ("DNA", "ER", "RNA", "AGP", "Mito")
CHANNEL_NUMBERS = {"DNA": 5, "ER": 2, "RNA": 6, "AGP": 3, "Mito": 4}  # JUMP's chN of each stain
MOAS = ("dna_damage", "actin_stabilizer", "mito_fission", "nucleolar_stress")
CONTROL = "DMSO"
STRENGTHS = (1.0, 0.7)  # a MoA's compounds: the fraction of affected cells is 0.9 * strength
PLATEMAP_COLUMNS = ("plate", "well", "perturbation", "control", "batch", "moa")
# Per phenotype and channel (CHANNELS order): the factor that gives the phenotype's cells the
# mean integrated light of a DMSO cell (measured over 4,000 rendered cells of each), so a MoA
# moves shape and texture, not a channel's brightness.
LIGHT = {"dna_damage": (1.054, 1.0, 1.0, 1.0, 1.0), "actin_stabilizer": (1.0, 1.104, 1.032, 0.894, 1.062),
         "mito_fission": (1.0, 1.0, 1.0, 1.0, 0.910), "nucleolar_stress": (1.0, 1.276, 1.021, 1.0, 1.0)}
_SAME = (1.0,) * 5
GRANULE_LIGHT = 1.0
FULL_SCALE = 0.75  # a cell at gain 1 uses ~3/4 of the 16-bit range; batch gains stay below saturation


@dataclass(frozen=True)
class ScreenSpec:
    batches: int = 2
    plates_per_batch: int = 2
    n_moas: int = 4
    compounds_per_moa: int = 2
    replicates_per_plate: int = 1  # wells of each compound on every plate
    control_wells: int = 4  # DMSO wells on every plate
    sites: int = 2  # fields of view per well
    size: int = 128  # pixels per side of a site
    cells: int = 22  # mean cells per 128 x 128 px
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.n_moas <= len(MOAS):
            raise ValueError(f"n_moas must be 1 to {len(MOAS)} (the phenotypes {MOAS}), got {self.n_moas}")
        if not 1 <= self.compounds_per_moa <= len(STRENGTHS):
            raise ValueError(f"compounds_per_moa must be 1 to {len(STRENGTHS)}, got {self.compounds_per_moa}")
        if self.batches < 2 or self.plates_per_batch < 1:
            raise ValueError(f"a screen needs at least 2 batches of at least 1 plate (NSB compares batches), got "
                             f"batches={self.batches}, plates_per_batch={self.plates_per_batch}")
        if min(self.replicates_per_plate, self.control_wells, self.sites, self.cells) < 1 or self.size < 32:
            raise ValueError("replicates_per_plate, control_wells, sites and cells must be >= 1 and size >= 32")


@dataclass(frozen=True)
class Well:
    plate: str
    well: str  # JUMP's rXXcYY
    perturbation: str
    batch: str
    moa: str  # CONTROL for the DMSO wells
    strength: float  # 0 for DMSO

    @property
    def control(self) -> bool:
        return self.perturbation == CONTROL


def compounds(spec: ScreenSpec) -> list[tuple[str, str, float]]:
    """(compound, moa, strength) of every compound of the screen."""
    return [(f"cpd{m * spec.compounds_per_moa + k + 1:02d}", MOAS[m], STRENGTHS[k])
            for m in range(spec.n_moas) for k in range(spec.compounds_per_moa)]


def plate_map(spec: ScreenSpec) -> list[Well]:
    """Every well of every plate: each compound on every plate, DMSO on every plate, a random layout per plate."""
    wells = []
    for b in range(spec.batches):
        for p in range(spec.plates_per_batch):
            plate = f"B{b + 1}P{b * spec.plates_per_batch + p + 1:02d}"
            content = [(c, moa, s) for c, moa, s in compounds(spec) for _ in range(spec.replicates_per_plate)]
            content += [(CONTROL, CONTROL, 0.0)] * spec.control_wells
            rng = np.random.default_rng([spec.seed, 1, b, p])
            positions = [(r, c) for r in range(2, 16) for c in range(2, 24)]  # a 384-well plate without its edge
            if len(content) > len(positions):
                raise ValueError(f"{len(content)} wells do not fit on plate {plate} ({len(positions)} inner wells)")
            picked = sorted(rng.choice(len(positions), size=len(content), replace=False))
            order = rng.permutation(len(content))
            for slot, index in zip(picked, order):
                name, moa, strength = content[index]
                r, c = positions[slot]
                wells.append(Well(plate, f"r{r:02d}c{c:02d}", name, f"batch{b + 1}", moa, strength))
    return wells


def render_site(moa: str, strength: float, nuisance: Nuisance, rng: np.random.Generator,
                size: int = 128, cells: int = 22) -> np.ndarray:
    """One (5, size, size) float field in [0, 1] (channels ``CHANNELS``) of cells under ``moa``."""
    canvas = np.zeros((len(CHANNELS), size, size), np.float32)
    n_cells = max(1, int(round(cells * nuisance.density * size * size / 128**2)))
    for _ in range(n_cells):
        affected = moa != CONTROL and rng.random() < 0.9 * strength
        _draw_cell(canvas, moa if affected else CONTROL, rng)
    return _acquire(canvas, nuisance, rng)


def _draw_cell(canvas: np.ndarray, phenotype: str, rng: np.random.Generator) -> None:
    """Add one cell to ``canvas`` in a window around it (cells are small: no full-field arrays)."""
    size = canvas.shape[-1]
    radius, theta = rng.uniform(7.0, 10.0), rng.uniform(0, np.pi)
    stretch = 1.8 if phenotype == "actin_stabilizer" else rng.uniform(1.0, 1.15)
    a, b = radius * stretch, radius / stretch  # the area of a round cell of this radius
    cy, cx = rng.uniform(0, size, 2)
    half = int(np.ceil(a)) + 3
    y0, x0 = int(cy) - half, int(cx) - half
    yy, xx = np.mgrid[y0:y0 + 2 * half, x0:x0 + 2 * half].astype(np.float32)
    u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
    v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
    layers = _cell_layers(phenotype, rng, u, v, radius, a, b)
    ys, xs = slice(max(y0, 0), min(y0 + 2 * half, size)), slice(max(x0, 0), min(x0 + 2 * half, size))
    window = (slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0))
    for c, layer in enumerate(layers):
        canvas[c, ys, xs] += layer[window]


def _cell_layers(phenotype: str, rng: np.random.Generator, u, v, radius: float, a: float, b: float) -> list:
    """The five stains of one cell in its own frame (u along the long axis)."""
    body = _soft_ellipse(u, v, a, b)
    nucleus_r = radius * 0.45
    nucleus = _soft_ellipse(u, v, nucleus_r * (a / radius) ** 0.5, nucleus_r * (b / radius) ** 0.5)
    cytoplasm = np.clip(body - nucleus, 0, 1)
    light = rng.uniform(0.75, 0.95)
    if phenotype == "dna_damage":
        dna = _spots(rng, u, v, int(rng.integers(5, 9)), 0.65 * radius, 1.3, np.pi * nucleus_r**2 * light)
    else:
        dna = nucleus * light
    if phenotype == "nucleolar_stress":
        rna_spots = _spots(rng, u, v, 1, 0.15 * radius, 1.5, 3 * 2 * np.pi * 0.9**2 * 0.7)
        er = cytoplasm * _granules(rng, u, v, radius)
    else:
        rna_spots = _spots(rng, u, v, 3, 0.3 * radius, 0.9, 3 * 2 * np.pi * 0.9**2 * 0.7)
        er = cytoplasm * (0.35 + 0.2 * _nucleus_halo(u, v, nucleus_r))
    rna = 0.15 * cytoplasm + nucleus * rna_spots
    ring = np.clip(body - _soft_ellipse(u, v, a * 0.78, b * 0.7), 0, 1)
    if phenotype == "actin_stabilizer":
        fibres = sum(np.exp(-((v - off) ** 2) / (2 * 0.7**2)) for off in rng.uniform(-0.7 * b, 0.7 * b, 4))
        agp = 0.12 * body + body * np.clip(fibres, 0, 1) * 0.55
    else:
        agp = 0.12 * body + ring * 0.6
    if phenotype == "mito_fission":
        mito = cytoplasm * _puncta_mito(rng, u, v, a, b)
    else:
        mito = cytoplasm * _tubules(rng, u, v, a, b)
    return [layer * factor for layer, factor in zip([dna, er, rna, agp, mito], LIGHT.get(phenotype, _SAME))]


def _nucleus_halo(u: np.ndarray, v: np.ndarray, nucleus_r: float) -> np.ndarray:
    """The perinuclear ER rim: brighter just outside the nucleus."""
    r = np.sqrt(u**2 + v**2)
    return np.exp(-((r - 1.4 * nucleus_r) ** 2) / (2 * 1.5**2))


def _spots(rng: np.random.Generator, u, v, n: int, spread: float, sigma: float, total: float) -> np.ndarray:
    """``n`` Gaussian spots within ``spread`` of the centre that carry ``total`` light together."""
    amplitude = total / (n * 2 * np.pi * sigma**2)
    out = np.zeros_like(u)
    for pu, pv in rng.uniform(-spread, spread, (n, 2)):
        out += np.exp(-((u - pu) ** 2 + (v - pv) ** 2) / (2 * sigma**2))
    return out * amplitude


def _granules(rng: np.random.Generator, u, v, radius: float) -> np.ndarray:
    """Granular (vesiculated) ER: a dim reticulum and 10-13 bright granules."""
    return 0.12 + _spots(rng, u, v, int(rng.integers(10, 14)), 0.75 * radius, 1.1, GRANULE_LIGHT * radius**2)


def _segments(rng: np.random.Generator, u, v, a: float, b: float, n: int, long: float, short: float) -> np.ndarray:
    out = np.zeros_like(u)
    for _ in range(n):
        pu, pv = rng.uniform(-0.8 * a, 0.8 * a), rng.uniform(-0.8 * b, 0.8 * b)
        phi = rng.uniform(0, np.pi)
        du = (u - pu) * np.cos(phi) + (v - pv) * np.sin(phi)
        dv = -(u - pu) * np.sin(phi) + (v - pv) * np.cos(phi)
        out += np.exp(-(du**2) / (2 * long**2) - dv**2 / (2 * short**2))
    return out


def _tubules(rng: np.random.Generator, u, v, a: float, b: float) -> np.ndarray:
    """Tubular mitochondria: 7-10 thin segments (length sigma 3 px)."""
    return 0.8 * _segments(rng, u, v, a, b, int(rng.integers(7, 11)), 3.0, 0.7)


def _puncta_mito(rng: np.random.Generator, u, v, a: float, b: float) -> np.ndarray:
    """Fragmented mitochondria: twice as many round puncta carrying the tubules' light."""
    n = int(rng.integers(7, 11))
    return 0.8 * (3.0 * 0.7 / 1.0**2) / 2 * _segments(rng, u, v, a, b, 2 * n, 1.0, 1.0)


def batch_nuisance(spec: ScreenSpec, batch: int) -> dict[str, np.ndarray]:
    """The batch effect: a gain and a background offset per channel, shared by the batch's plates."""
    rng = np.random.default_rng([spec.seed, 2, batch])
    return {"gain": rng.uniform(0.6, 1.3, len(CHANNELS)), "background": rng.uniform(0.0, 0.08, len(CHANNELS))}


@dataclass(frozen=True)
class Nuisance:
    """What varies from well to well whatever the condition: density and acquisition."""

    density: float  # cells relative to ScreenSpec.cells
    gain: np.ndarray  # per channel: batch x plate x well
    background: np.ndarray  # per channel: batch + well
    blur: float  # defocus, Gaussian sigma in px
    noise: float  # camera noise sd


def well_nuisance(rng: np.random.Generator, batch: dict[str, np.ndarray], plate_gain: np.ndarray) -> Nuisance:
    """Per-well acquisition and density, the same distribution for every condition."""
    n = len(CHANNELS)
    return Nuisance(density=float(rng.uniform(0.7, 1.3)), gain=batch["gain"] * plate_gain * rng.uniform(0.6, 1.0, n),
                    background=batch["background"] + rng.uniform(0.0, 0.06, n), blur=float(rng.uniform(0.0, 1.0)),
                    noise=float(rng.uniform(0.005, 0.03)))


def _acquire(canvas: np.ndarray, nuisance: Nuisance, rng: np.random.Generator) -> np.ndarray:
    sigma = nuisance.blur
    out = np.empty_like(canvas)
    for c in range(canvas.shape[0]):
        channel = _gaussian_blur(canvas[c], sigma) if sigma > 0.3 else canvas[c]
        noise = rng.normal(0.0, nuisance.noise, channel.shape)
        out[c] = nuisance.background[c] + FULL_SCALE * nuisance.gain[c] * channel + noise
    return np.clip(out, 0, 1)


def jump_name(well: str, site: int, channel: str) -> str:
    """JUMP's file name of one channel of one site: ``r03c05f02p01-ch5sk1fk1fl1.tiff``."""
    return f"{well}f{site:02d}p01-ch{CHANNEL_NUMBERS[channel]}sk1fk1fl1.tiff"


def write_screen(dest: str | Path, spec: ScreenSpec = ScreenSpec()) -> Path:
    """Write every plate's channel files under ``dest/<plate>/`` and ``dest/platemap.csv``; returns the plate map."""
    import tifffile

    dest = Path(dest)
    wells = plate_map(spec)
    plates = {plate: i for i, plate in enumerate(dict.fromkeys(w.plate for w in wells))}
    batches = {b: batch_nuisance(spec, i) for i, b in enumerate(sorted({w.batch for w in wells}))}
    for index, well in enumerate(wells):
        plate_gain = np.random.default_rng([spec.seed, 3, plates[well.plate]]).uniform(0.9, 1.1, len(CHANNELS))
        rng = np.random.default_rng([spec.seed, 4, index])
        nuisance = well_nuisance(rng, batches[well.batch], plate_gain)
        (dest / well.plate).mkdir(parents=True, exist_ok=True)
        for site in range(1, spec.sites + 1):
            image = render_site(well.moa, well.strength, nuisance, rng, spec.size, spec.cells)
            for c, channel in enumerate(CHANNELS):
                pixels = np.round(image[c] * 65535).astype(np.uint16)
                tifffile.imwrite(dest / well.plate / jump_name(well.well, site, channel), pixels,
                                 photometric="minisblack", metadata=None)
    path = dest / "platemap.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(PLATEMAP_COLUMNS)
        writer.writerows((w.plate, w.well, w.perturbation, w.control, w.batch, w.moa) for w in wells)
    return path
