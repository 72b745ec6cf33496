"""``parallel-setup execute``: not built yet."""

from ..errors import FatalError


def add_parser(sub):
    p = sub.add_parser("execute", help="(not built yet)")
    p.set_defaults(func=run)


def run(args):
    raise FatalError("execute is not built yet")
