"""The one Jinja2 environment every template is rendered with.

* ``StrictUndefined``: a missing variable is an error naming the template and the
  variable, never an empty string.
* ``keep_trailing_newline``, no autoescape: the output is Markdown, bash and plain text.
* Search path: the project's ``.parallel/templates/``, then the user-level folder
  (``$XDG_CONFIG_HOME/parallel-setup/templates``), then the built-in ``templates/``;
  a same-named file earlier in the path wins. ``builtin/NAME`` always means the
  shipped template, whatever overrides exist, so an override can
  ``{% extends "builtin/setup.sh.j2" %}`` and replace one block. Template names are
  plain relative names: absolute paths and ``..`` are refused, and a name never
  resolves to a file outside the template folders (symbolic links included).
* Filters: ``sh`` (``shlex.quote``: every value put into bash), ``json`` (a JSON
  literal, non-ASCII kept), ``fence`` (a backtick fence longer than any run of
  backticks inside the text, so plan text cannot close a Markdown code block).

Plan text is data. It only ever reaches a template as a variable's value, which
Jinja prints as written: ``{{ 7*7 }}`` in a task description stays ``{{ 7*7 }}``.
Nothing here compiles a string that came from a plan.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any, Iterable, List, Optional, Sequence, Tuple

import jinja2

from .errors import FatalError
from .paths import TEMPLATES_DIR, user_templates_dirs

TEMPLATE_NAMES = (
    "subagent-prompt.md.j2",
    "setup.sh.j2",
    "issue-title.txt.j2",
    "issue-body.md.j2",
    "completion-report.md.j2",
    "spawn-instructions.md.j2",
    "merge-conflict.md.j2",
)


class TemplateError(FatalError):
    """A template could not be found, parsed or rendered."""


def search_path(project: Optional[Path] = None, extra: Sequence[Path] = ()) -> List[Path]:
    """Template folders, highest priority first."""
    return [*map(Path, extra), *user_templates_dirs(project), TEMPLATES_DIR]


#: The prefix that always names the shipped template: ``builtin/setup.sh.j2``.
BUILTIN_PREFIX = "builtin/"


def check_name(template: str) -> None:
    """Refuse a template name that is not a plain relative name inside the template folders."""
    if not template or template.startswith(("/", "\\")) or "\\" in template or re.match(r"^[A-Za-z]:", template):
        raise TemplateError(f"template name {template!r} must be a plain relative name")
    if any(part == ".." for part in template.split("/")):
        raise TemplateError(f"template name {template!r} reaches outside the template folders")


class _RootedLoader(jinja2.FileSystemLoader):
    """A FileSystemLoader that refuses names reaching outside its folders.

    ``builtin/NAME`` is looked up in the built-in folder only (the last one).
    """

    def get_source(self, environment: jinja2.Environment, template: str):
        check_name(template)
        if template.startswith(BUILTIN_PREFIX):
            name, folders = template[len(BUILTIN_PREFIX):], [str(TEMPLATES_DIR)]
            check_name(name)
            try:
                contents, filename, uptodate = jinja2.FileSystemLoader(folders).get_source(environment, name)
            except jinja2.TemplateNotFound:
                raise jinja2.TemplateNotFound(template) from None
        else:
            folders = self.searchpath
            contents, filename, uptodate = super().get_source(environment, template)
        resolved = Path(filename).resolve()
        roots = [Path(p).resolve() for p in folders]
        if not any(resolved == r or r in resolved.parents for r in roots):
            raise TemplateError(f"template {template!r} resolves to {resolved}, outside the template folders")
        return contents, filename, uptodate


def fence(text: Any, char: str = "`") -> str:
    """A Markdown code fence longer than any run of ``char`` in ``text`` (at least 3)."""
    runs = [len(m.group(0)) for m in re.finditer(re.escape(char) + "+", str(text))]
    return char * max(3, max(runs, default=0) + 1)


def sh_quote(value: Any) -> str:
    """Quote one value for bash. None and booleans are refused: they are template bugs."""
    if value is None or isinstance(value, bool) or isinstance(value, jinja2.Undefined):
        raise TemplateError(f"the sh filter got {value!r}; quote text or numbers only")
    return shlex.quote(str(value))


def to_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def make_environment(project: Optional[Path] = None, extra_dirs: Iterable[Path] = ()) -> jinja2.Environment:
    """The Jinja environment for ``project`` (None: user-level and built-in templates only)."""
    env = jinja2.Environment(
        loader=_RootedLoader([str(p) for p in search_path(project, tuple(extra_dirs))]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["sh"] = sh_quote
    env.filters["json"] = to_json
    env.filters["fence"] = fence
    return env


def template_origin(env: jinja2.Environment, name: str) -> Path:
    """The file a template name resolves to (to show which override is in use)."""
    return Path(env.get_template(name).filename or name)


def render(env: jinja2.Environment, name: str, /, **context: Any) -> str:
    """Render one template; every failure is a TemplateError naming the template."""
    try:
        template = env.get_template(name)
    except TemplateError:
        raise
    except jinja2.TemplateNotFound:
        raise TemplateError(f"template {name!r} not found in: "
                            + ", ".join(str(p) for p in env.loader.searchpath)) from None  # type: ignore[union-attr]
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"template {name} ({e.filename or _origin(env, name)}) line {e.lineno}: "
                            f"syntax error: {e.message}") from None
    try:
        return template.render(**context)
    except TemplateError:
        raise
    except RecursionError:
        raise TemplateError(f"template {name} ({template.filename}) extends or includes itself; to build on "
                            f"the shipped template, extend \"{BUILTIN_PREFIX}{name}\"") from None
    except jinja2.UndefinedError as e:
        where = _template_line(e, template.filename)
        raise TemplateError(f"template {name} ({template.filename}){where}: {e.message}; "
                            f"available variables: {', '.join(sorted(context))}") from None
    except jinja2.TemplateSyntaxError as e:  # an included template
        raise TemplateError(f"template {e.name or name} ({e.filename}) line {e.lineno}: syntax error: {e.message}") from None
    except jinja2.TemplateNotFound as e:
        raise TemplateError(f"template {name}: includes {e.name!r}, which is not found") from None


def _origin(env: jinja2.Environment, name: str) -> str:
    for folder in getattr(env.loader, "searchpath", []):
        candidate = Path(folder) / name
        if candidate.is_file():
            return str(candidate)
    return name


def error_location(exc: BaseException) -> Tuple[Optional[str], Optional[int]]:
    """The file and line of the innermost template frame in ``exc``'s traceback.

    Jinja rewrites a render error's traceback so that template frames carry the
    template's file name and line: with ``extends``, this is the file (override or
    built-in) whose line failed."""
    tb = exc.__traceback__
    found: Tuple[Optional[str], Optional[int]] = (None, None)
    while tb is not None:
        frame_file = tb.tb_frame.f_code.co_filename
        if frame_file.endswith(".j2") or "__jinja_exception__" in tb.tb_frame.f_globals:
            found = (frame_file, tb.tb_lineno)
        tb = tb.tb_next
    return found


def _template_line(exc: BaseException, filename: Optional[str]) -> str:
    """' line N' of the innermost template frame in the traceback, if any."""
    frame_file, line = error_location(exc)
    if frame_file is None:
        return ""
    return f" line {line}" + (f" (in {Path(frame_file).name})" if filename and frame_file != filename else "")
