"""``python -m parallel_setup.fake_github``: serve until interrupted, print the environment for gh."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import List, Optional

from .server import FakeGitHub


def main(argv: Optional[List[str]] = None) -> int:
    """Run a fake GitHub until interrupted and print the environment for ``gh``."""
    parser = argparse.ArgumentParser(
        prog="python -m parallel_setup.fake_github",
        description="Serve a fake GitHub API on 127.0.0.1 for the real gh CLI.")
    parser.add_argument("--port", type=int, default=0, help="port to bind (0: any free port)")
    parser.add_argument("--host", default="github.localhost", help="GH_HOST to serve")
    parser.add_argument("--issue-latency", type=float, default=0.0, metavar="SECONDS",
                        help="seconds each issue creation takes")
    parser.add_argument("--request-latency", type=float, default=0.0, metavar="SECONDS",
                        help="seconds added to every request")
    parser.add_argument("--repo", action="append", default=[], metavar="OWNER/NAME",
                        help="repository to create up front (repeatable)")
    parser.add_argument("--no-auto-create", action="store_true",
                        help="unknown repositories are not found instead of created")
    parser.add_argument("--reject-auth", action="store_true",
                        help="answer every request with 401 Bad credentials")
    parser.add_argument("--config-dir", default=None,
                        help="GH_CONFIG_DIR to print (default: a temporary directory)")
    args = parser.parse_args(argv)
    server = FakeGitHub(host=args.host, issue_latency=args.issue_latency,
                        request_latency=args.request_latency, repos=args.repo,
                        auto_create_repos=not args.no_auto_create, reject_auth=args.reject_auth,
                        port=args.port)
    server.start()
    config_dir = args.config_dir or server.env()["GH_CONFIG_DIR"]
    print(f"# fake GitHub for gh at {server.url} (admin: {server.url}/_admin/requests)")
    for name, value in server.gh_variables(config_dir).items():
        print(f"export {name}={value!s}" if value else f"export {name}=")
    print(f"# then: gh issue create -R {args.host}/acme/widgets --title T --body B")
    sys.stdout.flush()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(3600):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0
