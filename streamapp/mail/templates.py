"""Message templates: `<config_dir>/templates/<name>/{subject.txt, body.html[, body.txt]}`.

Templates are operator-written Jinja2 rendered with recipient data, so they run in Jinja's
sandbox (no `__class__`/`__globals__` escapes). Names follow SPEC §2:

- every attribute the database declares is in `recipient.attributes`, `None` when the recipient
  has no value (and every declared property in `properties`), so a recipient without a
  `firstname` gets "Hello friend", not a failed message;
- `None` renders as "" (`finalize`), and `default` treats `None` as unset: Jinja's own `default`
  replaces only undefined values, so `{{ x | default("friend") }}` would print "" for a declared
  but unset `x`;
- any other name is `StrictUndefined`: a misspelt variable fails that one message with a reason,
  never sends a blank. `streamapp.mail.template_lint` finds those names before the first send.

A render is bounded (SPEC §2): over RENDER_SECONDS or RENDER_BYTES it fails that message. Time is
checked at every attribute access, call, loop iteration and output chunk (a loop is wrapped in a
guard when compiled), size as the output streams out; `*` and `**` refuse results over the size
bound before computing them.

Only `.html` files are autoescaped: a subject or text part must not show `&amp;`.
`trim_blocks`/`lstrip_blocks` are on so `{% if %}` lines in text templates leave no stray blank
lines. Every template is read and compiled once at start-up; rendering never touches the file
system.
"""

from __future__ import annotations

import re
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateError,
    TemplateRuntimeError,
    TemplateSyntaxError,
    Undefined,
    nodes,
    select_autoescape,
)
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

from streamapp.settings import CampaignSettings, Settings, TriggerSettings

SUBJECT = "subject.txt"
HTML = "body.html"
TEXT = "body.txt"
FILES = (SUBJECT, HTML, TEXT)

#: The variables a template sees (SPEC §2), and the fields of those that are records.
CONTEXT_NAMES = frozenset({"recipient", "properties", "history", "message"})
RECIPIENT_FIELDS = frozenset({"originalId", "email", "status", "attributes"})
#: `message.name` (the trigger or campaign) is not carried by SendMessage yet.
MESSAGE_FIELDS = frozenset({"messageId", "priority"})

#: SPEC §2: a render over either bound fails that message.
RENDER_SECONDS = 1.0
RENDER_BYTES = 1_000_000


class TemplateLoadError(Exception):
    """A template folder or file is missing or does not compile; the message names the file."""


class RenderError(Exception):
    """Rendering one message failed (undefined variable, sandbox violation, filter error, a bound).

    The message names the template file and line, e.g. "welcome/body.html line 3: 'firstname'
    is undefined"; the send path records it as the reason the message `failed`.
    """


class RenderLimitError(TemplateRuntimeError):
    """A render went over RENDER_SECONDS or RENDER_BYTES."""


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    subject: str  # one line: whitespace (and so any CR/LF) collapsed to single spaces
    html: str
    text: str  # body.txt, or derived from the HTML when there is none


@dataclass(frozen=True, slots=True)
class Declared:
    """The names one template's renders always carry: attributes and properties absent become None."""

    attributes: frozenset[str] = frozenset()
    properties: frozenset[str] = frozenset()


def declared_names(settings: Settings) -> dict[str, Declared]:
    """Per template: the attributes of every database and the properties of every trigger or campaign
    using it. A union is safe: the lint checks each use against its own schema."""
    found: dict[str, tuple[set[str], set[str]]] = {}
    uses: list[TriggerSettings | CampaignSettings] = [*settings.triggers.values(), *settings.campaigns.values()]
    for use in uses:
        attributes, properties = found.setdefault(use.template, (set(), set()))
        attributes.update(settings.databases[use.database].attributes)
        properties.update(use.properties or ())
    return {name: Declared(frozenset(a), frozenset(p)) for name, (a, p) in found.items()}


class _Undefined(StrictUndefined):
    """StrictUndefined whose message names the variable itself, not "'dict object' has no attribute"."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint is None and self._undefined_name is not None:
            return f"{self._undefined_name!r} is undefined"
        return str(super()._undefined_message)


def _finalize(value: Any) -> Any:
    """`{{ x }}` of a declared but unset value prints nothing, not "None"."""
    return "" if value is None else value


def _default(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    """Jinja's `default`, except that None (a declared attribute without a value) counts as unset."""
    if value is None or isinstance(value, Undefined) or (boolean and not value):
        return default_value
    return value


# --- bounds of one render --------------------------------------------------------------------


class _Budget:
    """The deadline and the bytes left of the render in progress."""

    __slots__ = ("deadline", "left")

    def __init__(self) -> None:
        self.deadline = time.perf_counter() + RENDER_SECONDS
        self.left = RENDER_BYTES

    def spend(self, size: int) -> None:
        self.left -= size
        if self.left < 0:
            raise RenderLimitError(f"the rendered message is over {RENDER_BYTES:,} bytes")
        _tick()


_BUDGET: ContextVar[_Budget | None] = ContextVar("template_budget", default=None)


def _tick() -> None:
    budget = _BUDGET.get()
    if budget is not None and time.perf_counter() > budget.deadline:
        raise RenderLimitError(f"rendering took over {RENDER_SECONDS:g} s")


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """`"-" * n` and `b ** n` are refused before they build a result over the size bound."""
    if operator == "*":
        sequence, count = (left, right) if isinstance(right, int) else (right, left)
        if isinstance(sequence, str | list | tuple) and isinstance(count, int) and len(sequence) * count > RENDER_BYTES:
            raise RenderLimitError(f"'*' would build over {RENDER_BYTES:,} items")
    elif operator == "**" and _huge_power(left, right):
        raise RenderLimitError(f"'**' would build a number over {RENDER_BYTES:,} bytes")


def _huge_power(base: Any, exponent: Any) -> bool:
    if not (isinstance(base, int) and isinstance(exponent, int)) or exponent <= 0 or abs(base) <= 1:
        return False
    return base.bit_length() * exponent > 8 * RENDER_BYTES


class _Environment(SandboxedEnvironment):
    """The sandbox, with the render bounds checked at every access, call and loop iteration."""

    intercepted_binops = frozenset({"*", "**"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        _tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _tick()
        return super().getitem(obj, argument)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _tick()
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def guard_loop(self, iterable: Iterable[Any]) -> Iterator[Any]:
        """What every `{% for %}` iterates: the deadline is checked at each item."""
        for item in iterable:
            _tick()
            yield item

    def _generate(
        self, source: nodes.Template, name: str | None, filename: str | None, defer_init: bool = False
    ) -> str:
        for loop in source.find_all(nodes.For):
            guard = nodes.EnvironmentAttribute("guard_loop", lineno=loop.lineno)
            loop.iter = nodes.Call(guard, [loop.iter], [], None, None, lineno=loop.iter.lineno)
        return str(super()._generate(source, name, filename, defer_init))


def environment(root: Path) -> SandboxedEnvironment:
    """The environment templates under `root` are compiled in (the lint parses with it too)."""
    env = _Environment(
        loader=FileSystemLoader(root),
        undefined=_Undefined,
        finalize=_finalize,
        autoescape=select_autoescape(enabled_extensions=("html", "htm"), default_for_string=False),
        auto_reload=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["default"] = env.filters["d"] = _default
    return env


# --- the store -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Compiled:
    subject: Template
    html: Template
    text: Template | None
    attributes: Mapping[str, None]  # declared attributes, all None: what a recipient's own values update
    properties: Mapping[str, None]


class TemplateStore:
    """The compiled templates of one configuration, looked up by template (folder) name."""

    def __init__(self, root: Path, templates: Mapping[str, _Compiled]) -> None:
        self._root = str(root)
        self._templates = dict(templates)

    @classmethod
    def load(
        cls, templates_dir: Path, names: Iterable[str], declared: Mapping[str, Declared] | None = None
    ) -> TemplateStore:
        """Read and compile every named template; raise TemplateLoadError naming the first bad file."""
        root = templates_dir.resolve()
        env = environment(root)
        known = declared or {}
        compiled = {name: _compile(env, root, name, known.get(name, Declared())) for name in sorted(set(names))}
        return cls(root, compiled)

    @classmethod
    def for_settings(cls, settings: Settings) -> TemplateStore:
        """Every template of the configuration's triggers and campaigns, with their declared names."""
        declared = declared_names(settings)
        return cls.load(settings.templates_dir, declared, declared)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._templates)

    def render(
        self,
        name: str,
        recipient: Mapping[str, Any],
        properties: Mapping[str, Any],
        history: Sequence[Mapping[str, Any]],
        message: Mapping[str, Any] | None = None,
    ) -> RenderedMessage:
        """Render subject, HTML and text for one recipient; any template failure is a RenderError."""
        compiled = self._templates.get(name)
        if compiled is None:
            raise KeyError(f"template {name!r} was not loaded")
        context = {
            "recipient": _with_declared(recipient, compiled.attributes),
            "properties": {**compiled.properties, **properties} if compiled.properties else properties,
            "history": history,
            "message": message or {},
        }
        token = _BUDGET.set(budget := _Budget())
        try:
            subject = " ".join(self._run(compiled.subject, context, budget).split())
            html = self._run(compiled.html, context, budget)
            text = self._run(compiled.text, context, budget) if compiled.text is not None else html_to_text(html)
        finally:
            _BUDGET.reset(token)
        return RenderedMessage(subject=subject, html=html, text=text)

    def _run(self, template: Template, context: Mapping[str, Any], budget: _Budget) -> str:
        """One file, streamed so that an oversized or slow render stops early."""
        parts: list[str] = []
        try:
            for chunk in template.generate(context):
                budget.spend(len(chunk.encode("utf-8", "surrogatepass")) if not chunk.isascii() else len(chunk))
                parts.append(chunk)
        except Exception as exc:  # any failure of an operator's template fails this message only
            raise RenderError(f"{self._place(exc, template)}: {_reason(exc)}") from exc
        return "".join(parts)

    def _place(self, exc: BaseException, template: Template) -> str:
        """ "<name>/<file> line N" of the innermost template frame (an include may be the culprit)."""
        for frame in reversed(traceback.extract_tb(exc.__traceback__)):
            if frame.filename.startswith(self._root):
                relative = Path(frame.filename).relative_to(self._root).as_posix()
                return f"{relative} line {frame.lineno}"
        return str(template.name)


def _with_declared(recipient: Mapping[str, Any], declared: Mapping[str, None]) -> Mapping[str, Any]:
    """The recipient with every declared attribute present, None where it has no value."""
    if not declared:
        return recipient
    return {**recipient, "attributes": {**declared, **(recipient.get("attributes") or {})}}


def _reason(exc: Exception) -> str:
    if isinstance(exc, TemplateError):
        return exc.message or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


def _compile(env: SandboxedEnvironment, root: Path, name: str, declared: Declared) -> _Compiled:
    folder = root / name
    if not folder.is_dir():
        raise TemplateLoadError(f"{folder}: template folder not found")
    for required in (SUBJECT, HTML):
        if not (folder / required).is_file():
            raise TemplateLoadError(f"{folder / required}: missing (a template needs {SUBJECT} and {HTML})")
    return _Compiled(
        subject=_get(env, root, f"{name}/{SUBJECT}"),
        html=_get(env, root, f"{name}/{HTML}"),
        text=_get(env, root, f"{name}/{TEXT}") if (folder / TEXT).is_file() else None,
        attributes=dict.fromkeys(sorted(declared.attributes)),
        properties=dict.fromkeys(sorted(declared.properties)),
    )


def _get(env: SandboxedEnvironment, root: Path, name: str) -> Template:
    try:
        return env.get_template(name)
    except TemplateSyntaxError as exc:
        raise TemplateLoadError(f"{root / name}: line {exc.lineno}: {exc.message}") from exc
    except (TemplateError, UnicodeDecodeError, OSError) as exc:
        raise TemplateLoadError(f"{root / name}: {exc}") from exc


# --- text part derived from HTML -------------------------------------------------------------

_SKIP = frozenset({"head", "title", "style", "script", "template", "noscript"})
_PARAGRAPH = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "blockquote", "pre", "hr"})
_LINE = frozenset({"div", "tr", "li", "section", "article", "header", "footer", "address", "center", "dl", "dt", "dd"})
_CELL = frozenset({"td", "th"})
_SPACE = re.compile(r"[ \t\r\n\f]+")
_BLANK_LINES = re.compile(r"\n{3,}")


class _TextExtractor(HTMLParser):
    """HTML to readable plain text: blocks become lines, links "text (url)", entities unescaped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._breaks = 0  # newlines owed before the next text
        self._skip = 0
        self._pre = 0
        self._links: list[tuple[str, int]] = []  # (href, index in out where the link text starts)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skip += 1
        elif tag == "br":
            self._emit("\n", raw=True)
        elif tag == "a":
            self._links.append((dict(attrs).get("href") or "", len(self.out)))
        elif tag == "img":
            self._emit(dict(attrs).get("alt") or "")
        elif tag in _CELL:
            self._emit(" ")
        self._block(tag)
        if tag == "li":
            self._emit("- ")
        if tag == "pre":
            self._pre += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in ("br", "img", "hr"):
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag == "a" and self._links:
            self._close_link(*self._links.pop())
        elif tag == "pre":
            self._pre = max(0, self._pre - 1)
        self._block(tag)

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self._emit(data if self._pre else _SPACE.sub(" ", data), raw=bool(self._pre))

    def _block(self, tag: str) -> None:
        if tag in _PARAGRAPH:
            self._breaks = max(self._breaks, 2)
        elif tag in _LINE:
            self._breaks = max(self._breaks, 1)

    def _emit(self, text: str, raw: bool = False) -> None:
        if not text:
            return
        if self._breaks and self.out:
            self.out.append("\n" * self._breaks)
        self._breaks = 0
        if not raw and (not self.out or self.out[-1].endswith((" ", "\n"))):
            text = text.lstrip(" ")
        if text:
            self.out.append(text)

    def _close_link(self, href: str, start: int) -> None:
        label = "".join(self.out[start:]).strip()
        target = href.removeprefix("mailto:")
        if href and not href.startswith("#") and target != label and href != label:
            self._emit(f" ({href})" if label else href)


def html_to_text(html: str) -> str:
    """The plain-text alternative of an HTML body, for templates without body.txt."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    lines = (line.rstrip() for line in "".join(parser.out).split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip() + "\n"
