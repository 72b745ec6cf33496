"""``parallel-setup status``: not built yet."""

from ..errors import FatalError


def add_parser(sub):
    p = sub.add_parser("status", help="(not built yet)")
    p.set_defaults(func=run)


def run(args):
    raise FatalError("status is not built yet")
