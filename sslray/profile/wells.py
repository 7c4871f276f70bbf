"""One name per well: ``C03``, whatever the microscope or the plate map called it.

Plate maps write ``C03`` or ``C3``, CellProfiler ``c03``, and Opera/Phenix file names (JUMP's
``r03c03f03p01-ch1...``) give row and column numbers, ``r03c03``. Tiles and plate-map rows only
meet when both sides say the same thing, so every well is rewritten as the row letter(s) and a
two-digit column before the join. Rows run A..P on 384-well plates and A..AF on 1536-well plates
(32 rows x 48 columns), the largest format in use.
"""

from __future__ import annotations

import re

MAX_ROWS = 32  # 1536-well plates: rows A..Z, AA..AF
MAX_COLUMNS = 48
_LETTERS = re.compile(r"^([A-Za-z]{1,2})0*(\d{1,3})$")
_NUMBERS = re.compile(r"^[rR]0*(\d{1,3})[cC]0*(\d{1,3})$")


def row_letters(row: int) -> str:
    """1 -> ``A``, 26 -> ``Z``, 27 -> ``AA``, 32 -> ``AF``."""
    return chr(ord("A") + row - 1) if row <= 26 else "A" + chr(ord("A") + row - 27)


def row_number(letters: str) -> int:
    """``A`` -> 1, ``AF`` -> 32 (the inverse of ``row_letters``)."""
    letters = letters.upper()
    if len(letters) == 1:
        return ord(letters) - ord("A") + 1
    if letters[0] != "A":
        return MAX_ROWS + 1  # BA.. would be beyond any plate
    return 26 + ord(letters[1]) - ord("A") + 1


def normalise_well(value: object) -> str:
    """``"C03"``, ``"c3"``, ``"C3"``, ``"r03c03"`` -> ``"C03"``; anything else is a ValueError naming it."""
    text = str(value).strip()
    by_numbers = _NUMBERS.match(text)
    by_letters = _LETTERS.match(text)
    if by_numbers:
        row, column = int(by_numbers.group(1)), int(by_numbers.group(2))
    elif by_letters:
        row, column = row_number(by_letters.group(1)), int(by_letters.group(2))
    else:
        raise ValueError(f"well {value!r} is not a well name (expected a row letter and a column, C03, "
                         "or Opera's r03c03)")
    if not 1 <= row <= MAX_ROWS or not 1 <= column <= MAX_COLUMNS:
        raise ValueError(f"well {value!r} is off the plate: rows run A..AF (1..{MAX_ROWS}), "
                         f"columns 1..{MAX_COLUMNS}")
    return f"{row_letters(row)}{column:02d}"
