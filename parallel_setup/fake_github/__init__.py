"""A fake GitHub API server that the real ``gh`` CLI can talk to.

``gh`` treats the host ``github.localhost`` as a development host: it speaks plain
HTTP to ``api.github.localhost`` (GraphQL at ``/graphql``, REST under ``/``).
Pointing ``HTTP_PROXY`` at this server makes every such request arrive here as an
absolute-URI proxy request (``POST http://api.github.localhost/graphql``), so the
unmodified ``gh`` binary works against it with no GitHub account::

    with FakeGitHub(issue_latency=3.0) as gh_server:
        subprocess.run(["gh", "issue", "create", "-R", "github.localhost/acme/widgets",
                        "--title", "T", "--body", "B"], env=gh_server.env(), check=True)
        assert gh_server.issues("acme/widgets")[0]["number"] == 1

It answers what ``gh`` 2.23 sends for ``issue create/list/view/comment/close/edit``,
``label create/list``, ``pr create``, ``pr list --head``, ``pr view`` (with the merge
state), ``api rate_limit`` and ``auth status``, keeps a request log and
counters for assertions, and injects faults (latency, 5xx, secondary and primary rate
limits, hangs, rejected tokens, titles that always fail). Faults are configured with
Python methods or, from another process, with HTTP endpoints under
``http://127.0.0.1:PORT/_admin/`` (see :class:`FakeGitHub`).

Its parts follow the API's:

* ``server.py``: :class:`FakeGitHub` itself, its settings, request log and routing;
* ``transport.py``: the HTTP side (proxy requests, the admin endpoints, faults on the wire);
* ``graphql.py``: GraphQL documents (operation names, answers cut to the fields asked for);
* ``repos.py``, ``issues.py``, ``labels.py``, ``pulls.py``, ``search.py``: one mixin each,
  with the GraphQL operations (``_gql_<OperationName>``) and REST routes of that part;
* ``faults.py``, ``ratelimits.py``: scripted failures and the primary rate limit;
* ``cli.py``: ``python -m parallel_setup.fake_github``.

Standard library only; importing this package has no side effects. Run it standalone
with ``python -m parallel_setup.fake_github --port 0 --issue-latency 3``.
"""

from .cli import main
from .faults import FAULT_KINDS
from .server import FakeGitHub

__all__ = ["FakeGitHub", "FAULT_KINDS", "main"]
