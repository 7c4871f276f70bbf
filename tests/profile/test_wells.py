"""Well names: every spelling of a well becomes one, and a bad one is named."""

import pytest

from sslray.profile.wells import normalise_well, row_letters, row_number


@pytest.mark.parametrize("value", ["C03", "c3", "C3", "r03c03", "R3C3", " C003 "])
def test_every_spelling_of_a_well_is_C03(value):
    assert normalise_well(value) == "C03"


def test_1536_well_rows_run_to_AF():
    assert normalise_well("AF48") == "AF48"
    assert normalise_well("r32c48") == "AF48"
    assert normalise_well("r27c01") == "AA01"
    assert [row_letters(n) for n in (1, 26, 27, 32)] == ["A", "Z", "AA", "AF"]
    assert all(row_number(row_letters(n)) == n for n in range(1, 33))


@pytest.mark.parametrize("value", ["AG01", "A00", "A49", "r33c01", "BA01", "well3", "", "3C"])
def test_a_bad_well_is_an_error_naming_it(value):
    with pytest.raises(ValueError, match=f"well {value!r}"):
        normalise_well(value)
