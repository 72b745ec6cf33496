"""``parallel-setup demo``: not built yet."""

from ..errors import FatalError


def add_parser(sub):
    p = sub.add_parser("demo", help="(not built yet)")
    p.set_defaults(func=run)


def run(args):
    raise FatalError("demo is not built yet")
