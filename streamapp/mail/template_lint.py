"""The template lint (SPEC §2): every name a template uses, checked against the configuration.

Rendering is strict, so a misspelt name fails its message; the lint finds it before the first
send instead. `check_templates` compiles each file of each trigger's and campaign's template
(subject.txt, body.html, body.txt and what they include) and walks its AST
(`jinja2.meta.find_undeclared_variables` for the top-level names, `Getattr`/`Getitem` chains for
the rest, each node with its `lineno`):

- `recipient.attributes.<name>` / `["name"]` / `.get("name")`: declared by the database, unless
  it has `auto_create_attributes`;
- `properties.<name>` (and the same spellings): declared by the trigger or campaign, when it
  declares properties at all (`properties is None`: any name);
- `recipient.<field>` and `message.<field>`: fields the renderer passes;
- any other top-level name: one of recipient, properties, history, message or a Jinja global.

A template shared by several triggers or campaigns is checked against each. What the AST cannot
tell (a name reached through `{% set a = recipient.attributes %}`) is left to the strict render.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, TemplateError, TemplateSyntaxError, meta, nodes

from streamapp.mail.templates import (
    CONTEXT_NAMES,
    FILES,
    HTML,
    MESSAGE_FIELDS,
    RECIPIENT_FIELDS,
    SUBJECT,
    environment,
)
from streamapp.settings import ConfigIssue, Settings

#: Dict methods: `properties.items()` is the method, not a property named "items".
DICT_METHODS = frozenset({"get", "items", "keys", "values"})
#: The context values whose keys are declared names.
_MAPPINGS = (("properties",), ("recipient", "attributes"))
#: Declared names listed in a message, at most.
LISTED = 20


@dataclass(frozen=True)
class Use:
    """One trigger or campaign using a template: the names its renders may rely on."""

    owner: str  # "trigger 'welcome'"
    database: str
    attributes: frozenset[str] | None  # None: auto_create_attributes, any name
    properties: frozenset[str] | None  # None: properties not declared, any name


def uses(settings: Settings) -> dict[str, list[Use]]:
    """The uses of every template, by template name, in configuration order."""
    found: dict[str, list[Use]] = {}
    for kind, items in (("trigger", settings.triggers), ("campaign", settings.campaigns)):
        for item in items.values():
            db = settings.databases[item.database]
            attributes = None if db.auto_create_attributes else frozenset(db.attributes)
            properties = None if item.properties is None else frozenset(item.properties)
            found.setdefault(item.template, []).append(
                Use(f"{kind} {item.name!r}", item.database, attributes, properties)
            )
    return found


def check_templates(settings: Settings) -> list[ConfigIssue]:
    """Every problem of every template file, as configuration issues naming file, line and name."""
    root = settings.templates_dir.resolve()
    env = environment(root)
    issues: dict[ConfigIssue, None] = {}  # ordered, without the duplicates of a shared template
    for template, template_uses in uses(settings).items():
        if not all((root / template / f).is_file() for f in (SUBJECT, HTML)):
            continue  # reported by load_settings
        seen: dict[Use, set[str]] = {use: set() for use in template_uses}
        for file in (f"{template}/{f}" for f in FILES if (root / template / f).is_file()):
            for use in template_uses:
                issues.update(dict.fromkeys(_lint(env, root, file, use, seen[use])))
    return list(issues)


def _lint(env: Environment, root: Path, name: str, use: Use, seen: set[str]) -> Iterator[ConfigIssue]:
    """One file and the templates it includes, imports or extends (each once per use)."""
    if name in seen:
        return
    seen.add(name)
    path = str(root / name)
    try:
        source, filename, _ = env.loader.get_source(env, name)  # type: ignore[union-attr]
        path = filename or path
        ast = env.parse(source, name, filename)
    except TemplateSyntaxError as exc:
        yield ConfigIssue(path, f"line {exc.lineno}", exc.message or "syntax error")
        return
    except (TemplateError, UnicodeDecodeError, OSError) as exc:
        yield ConfigIssue(path, "", f"cannot be read: {exc}")
        return
    found = _problems(ast, use, frozenset(env.globals))
    try:
        env.compile(source, name, filename)  # an unknown filter or test is found here
    except TemplateSyntaxError as exc:
        found.add((exc.lineno, exc.message or "does not compile"))
    for line, message in sorted(found):
        yield ConfigIssue(path, f"line {line}", message)
    for included in meta.find_referenced_templates(ast):
        if included is not None:
            yield from _lint(env, root, included, use, seen)


def _problems(ast: nodes.Template, use: Use, globals_: frozenset[str]) -> set[tuple[int, str]]:
    found: set[tuple[int, str]] = set()
    known = CONTEXT_NAMES | globals_
    try:
        undeclared = meta.find_undeclared_variables(ast)
    except TemplateSyntaxError:  # an unknown filter or test, reported by the compile already
        undeclared = set()
    for name in undeclared - known:
        found.add((_first_use(ast, name) or 1, f"unknown variable {name!r} (known: {_listed(CONTEXT_NAMES)})"))
    for node in ast.find_all((nodes.Getattr, nodes.Getitem, nodes.Call)):
        problem = _name_problem(node, use)
        if problem is not None:
            found.add((node.lineno, problem))
    return found


def _name_problem(node: nodes.Node, use: Use) -> str | None:
    """What is wrong with the name `node` reads from the context, if it reads one."""
    reference = _reference(node)
    if reference is None:
        return None
    match reference:
        case ("recipient", "attributes", name):
            if use.attributes is None or name in use.attributes:
                return None
            return f"attribute {name!r} is not declared by database {use.database!r} (used by {use.owner})"
        case ("properties", name):
            if use.properties is None or name in use.properties:
                return None
            declared = f"declared: {_listed(use.properties)}" if use.properties else "it declares none"
            return f"property {name!r} is not declared by {use.owner} ({declared})"
        case ("recipient", name) if name not in RECIPIENT_FIELDS:
            return f"recipient has no field {name!r} (fields: {_listed(RECIPIENT_FIELDS)})"
        case ("message", name) if name not in MESSAGE_FIELDS:
            return f"message has no field {name!r} (fields: {_listed(MESSAGE_FIELDS)})"
    return None


def _reference(node: nodes.Node) -> tuple[str, ...] | None:
    """`recipient.attributes.x` as ("recipient", "attributes", "x"): a name, then constant keys.

    A dict method (`properties.items`) is not a key; `properties.get("x")` reads the key "x".
    """
    if isinstance(node, nodes.Call):
        method = node.node
        if not (isinstance(method, nodes.Getattr) and method.attr == "get" and node.args):
            return None
        key = node.args[0]
        base = _path(method.node)
        if base is None or not (isinstance(key, nodes.Const) and isinstance(key.value, str)):
            return None
        return (*base, key.value) if base in _MAPPINGS else None
    path = _path(node)
    if path is None or len(path) < 2:
        return None
    if isinstance(node, nodes.Getattr) and path[-1] in DICT_METHODS and path[:-1] in _MAPPINGS:
        return None
    return path


def _path(node: nodes.Node) -> tuple[str, ...] | None:
    """The chain of constant keys from a context name, or None (a call, a variable key, a local)."""
    keys: list[str] = []
    while True:
        if isinstance(node, nodes.Getattr):
            keys.append(node.attr)
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            keys.append(node.arg.value)
        elif isinstance(node, nodes.Name) and node.ctx == "load":
            return (node.name, *reversed(keys))
        else:
            return None
        node = node.node


def _first_use(node: nodes.Node, name: str, bound: bool = False) -> int | None:
    """The line of the first read of `name` that no enclosing loop or macro binds."""
    if isinstance(node, nodes.Name) and node.name == name and node.ctx == "load" and not bound:
        return int(node.lineno)
    binds = _binds(node, name)
    for child in node.iter_child_nodes():
        inner = bound or (binds and not (isinstance(node, nodes.For) and child is node.iter))
        line = _first_use(child, name, inner)
        if line is not None:
            return line
    return None


def _binds(node: nodes.Node, name: str) -> bool:
    if isinstance(node, nodes.For):
        return name == "loop" or name in _names(node.target)
    if isinstance(node, nodes.Macro | nodes.CallBlock):
        return name in ("caller", "varargs", "kwargs") or any(a.name == name for a in node.args)
    return False


def _names(target: nodes.Node) -> set[str]:
    """The names a loop target assigns (`x`, or `k, v`)."""
    found = {n.name for n in target.find_all(nodes.Name)}
    return found | {target.name} if isinstance(target, nodes.Name) else found


def _listed(names: frozenset[str]) -> str:
    shown = sorted(names)
    return ", ".join(shown[:LISTED]) + (f", … ({len(shown)} in all)" if len(shown) > LISTED else "")
