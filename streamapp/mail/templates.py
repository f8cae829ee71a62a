"""Message templates: `<config_dir>/templates/<name>/{subject.txt, body.html[, body.txt]}`.

Templates are operator-written Jinja2 rendered with recipient data, so they run in Jinja's
sandbox (no `__class__`/`__globals__` escapes) with `StrictUndefined`: a misspelt variable must
fail that one message with a reason (SPEC §2), never send a blank. Only `.html` files are
autoescaped: a subject or text part must not show `&amp;`. `trim_blocks`/`lstrip_blocks` are on
so `{% if %}` lines in text templates leave no stray blank lines.

Every template is read and compiled once by `TemplateStore.load` at start-up; rendering never
touches the file system.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, Template, TemplateError, TemplateSyntaxError, select_autoescape
from jinja2.sandbox import SandboxedEnvironment

SUBJECT = "subject.txt"
HTML = "body.html"
TEXT = "body.txt"


class TemplateLoadError(Exception):
    """A template folder or file is missing or does not compile; the message names the file."""


class RenderError(Exception):
    """Rendering one message failed (undefined variable, sandbox violation, filter error).

    The message names the template file and line, e.g. "welcome/body.html line 3: 'firstname'
    is undefined"; the send path records it as the reason the message `failed`.
    """


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    subject: str  # one line: whitespace (and so any CR/LF) collapsed to single spaces
    html: str
    text: str  # body.txt, or derived from the HTML when there is none


class _Undefined(StrictUndefined):
    """StrictUndefined whose message names the variable itself, not "'dict object' has no attribute"."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint is None and self._undefined_name is not None:
            return f"{self._undefined_name!r} is undefined"
        return str(super()._undefined_message)


@dataclass(frozen=True, slots=True)
class _Compiled:
    subject: Template
    html: Template
    text: Template | None


class TemplateStore:
    """The compiled templates of one configuration, looked up by template (folder) name."""

    def __init__(self, root: Path, templates: Mapping[str, _Compiled]) -> None:
        self._root = str(root)
        self._templates = dict(templates)

    @classmethod
    def load(cls, templates_dir: Path, names: Iterable[str]) -> TemplateStore:
        """Read and compile every named template; raise TemplateLoadError naming the first bad file."""
        root = templates_dir.resolve()
        env = _environment(root)
        compiled = {name: _compile(env, root, name) for name in sorted(set(names))}
        return cls(root, compiled)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._templates)

    def render(
        self,
        name: str,
        recipient: Mapping[str, Any],
        properties: Mapping[str, Any],
        history: Sequence[Mapping[str, Any]],
    ) -> RenderedMessage:
        """Render subject, HTML and text for one recipient; any template failure is a RenderError."""
        compiled = self._templates.get(name)
        if compiled is None:
            raise KeyError(f"template {name!r} was not loaded")
        context = {"recipient": recipient, "properties": properties, "history": history}
        subject = " ".join(self._run(compiled.subject, context).split())
        html = self._run(compiled.html, context)
        text = self._run(compiled.text, context) if compiled.text is not None else html_to_text(html)
        return RenderedMessage(subject=subject, html=html, text=text)

    def _run(self, template: Template, context: Mapping[str, Any]) -> str:
        try:
            return template.render(context)
        except Exception as exc:  # any failure of an operator's template fails this message only
            raise RenderError(f"{self._place(exc, template)}: {_reason(exc)}") from exc

    def _place(self, exc: BaseException, template: Template) -> str:
        """ "<name>/<file> line N" of the innermost template frame (an include may be the culprit)."""
        for frame in reversed(traceback.extract_tb(exc.__traceback__)):
            if frame.filename.startswith(self._root):
                relative = Path(frame.filename).relative_to(self._root).as_posix()
                return f"{relative} line {frame.lineno}"
        return str(template.name)


def _reason(exc: Exception) -> str:
    if isinstance(exc, TemplateError):
        return exc.message or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


def _environment(root: Path) -> SandboxedEnvironment:
    return SandboxedEnvironment(
        loader=FileSystemLoader(root),
        undefined=_Undefined,
        autoescape=select_autoescape(enabled_extensions=("html", "htm"), default_for_string=False),
        auto_reload=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _compile(env: SandboxedEnvironment, root: Path, name: str) -> _Compiled:
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
