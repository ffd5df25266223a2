"""The CLI reference page, generated from the typer app at build time so it cannot drift from the code.

MkDocs loads this file as a hook (`hooks:` in mkdocs.yml): `on_files` adds `reference/cli.md`,
written by walking `typer.main.get_command(app)`: every command, sub-command, argument and option.
`tests/test_docs.py` imports `cli_markdown` to check that nothing is left out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

PAGE = "reference/cli.md"


def _context(command: Any, name: str) -> Any:
    """A context for `command` (typer ships its own click, so its classes are reached through the command)."""
    return command.context_class(command, info_name=name)


def _commands(command: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command under `command`, depth first, in the order `--help` lists them."""
    yield path, command
    if hasattr(command, "list_commands"):
        ctx = _context(command, " ".join(path))
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from _commands(sub, (*path, name))


def _cell(text: object) -> str:
    """A markdown table cell: one line, pipes escaped."""
    return _html_safe(" ".join(str(text).split())).replace("|", "\\|")


def _html_safe(text: str) -> str:
    """`<bos>` and `runs/<preset>` in help texts are text, not HTML tags."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _default(param: Any) -> str:
    if param.required:
        return "required"
    default = param.default
    if default is None or callable(default) or (getattr(param, "is_flag", False) and not default):
        return ""
    return f"`{default}`"


def _param_row(param: Any, ctx: Any) -> str:
    if param.param_type_name == "argument":
        name = f"`{param.name.upper()}`"
        kind = "argument" + (" (one or more)" if param.nargs == -1 else "")
        help_text = getattr(param, "help", None) or ""
    else:
        names = [*param.opts, *param.secondary_opts]
        name = " / ".join(f"`{n}`" for n in names)
        kind = "flag" if param.is_flag else param.display_type(ctx).strip("<>").replace("list[Path]", "path")
        if param.multiple:
            kind += ", repeatable"
        help_text = param.help or ""
    return f"| {name} | {_cell(kind)} | {_cell(_default(param))} | {_cell(help_text)} |"


def cli_markdown() -> str:
    """The whole reference page: one section per command, a table of its arguments and options."""
    import typer

    from mythos_convert.cli import app

    root = typer.main.get_command(app)
    lines = [
        "# Command-line reference",
        "",
        "Generated from the `mythos-convert` program itself when this site is built: every command and",
        "every option below is what `mythos-convert COMMAND --help` shows.",
        "",
    ]
    for path, command in _commands(root, ("mythos-convert",)):
        title = " ".join(path)
        lines += [f"## {title}", ""]
        if command.help:
            lines += [_html_safe(command.help.split("\f")[0].strip()), ""]
        ctx = _context(command, title)
        usage = " ".join(
            piece.strip("{}").upper() if piece.startswith("{") else piece for piece in command.collect_usage_pieces(ctx)
        )
        lines += ["```text", f"{title} {usage}".rstrip(), "```", ""]
        params = [p for p in command.params if not getattr(p, "hidden", False)]
        params += [p for p in [command.get_help_option(ctx)] if p is not None]
        lines += ["| name | kind | default | meaning |", "|---|---|---|---|"]
        lines += [_param_row(p, ctx) for p in params]
        lines.append("")
    return "\n".join(lines)


def on_files(files, config):  # MkDocs calls it with these two
    """Add the generated page to the site (MkDocs >= 1.6: a generated file, nothing written to docs/)."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=cli_markdown()))
    return files
