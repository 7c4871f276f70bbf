"""The shared argparse pieces: intermixed flags and positionals, and the ``key.sub=value`` list."""

from sslray.cli.parsing import Parser, add_overrides


def _parser(intermixed: bool) -> Parser:
    parser = Parser(prog="t")
    parser.intermixed = intermixed
    parser.add_argument("src")
    parser.add_argument("--tile-size", type=int)
    add_overrides(parser)
    return parser


def test_an_intermixed_parser_takes_flags_between_positionals():
    args = _parser(True).parse_args(["SRC", "--tile-size", "224", "a=1", "b.c=2"])
    assert (args.src, args.tile_size, args.overrides) == ("SRC", 224, ["a=1", "b.c=2"])


def test_intermixed_parsing_can_be_repeated():
    parser = _parser(True)
    parser.parse_args(["A", "x=1"])
    assert parser.intermixed  # restored after the parse, so the next one is intermixed too
    assert parser.parse_args(["B", "--tile-size", "8", "y=2"]).overrides == ["y=2"]


def test_overrides_default_to_an_empty_list():
    assert _parser(False).parse_args(["SRC"]).overrides == []
