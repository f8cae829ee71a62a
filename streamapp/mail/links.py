"""Rewriting a rendered `body.html` for tracking (SPEC §8): links through `/t/c/…`, a pixel `/t/o/…`.

The document is tokenized with the standard library's HTML parser (the tokenizer of `html.parser`,
which knows comments, `<script>`/`<style>` text, CDATA, declarations and unquoted, single- or
double-quoted attributes), never searched with a regex as a whole: an `<a href>` inside a comment
or a script is not a link and stays as it is. Only the value of each `href` of an `<a>` start tag is
replaced, in place, so everything else keeps its bytes (attribute order, quoting, whitespace,
entities elsewhere). A value is compared after entity decoding (`&amp;` is `&`) and written back
escaped.

Rewritten: absolute `http://` and `https://` links. Left alone: `mailto:` and every other scheme,
relative links and fragments, links that `keep(url)` refuses (the unsubscribe link), and links
longer than a click token carries. The pixel goes before the last `</body>`, or at the end when
there is none.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from html.parser import HTMLParser

from streamapp.mail.tracking import TrackedMessage, is_trackable, make_token

#: One attribute of a start tag, as html.parser reads them (its `attrfind_tolerant`), with positions.
_ATTRIBUTE = re.compile(
    r"""((?<=[\'"\s/])[^\s/>][^\s/=>]*)(\s*=+\s*(\'[^\']*\'|"[^"]*"|(?![\'"])[^>\s]*))?(?:\s|/(?!>))*"""
)
_TAG_NAME = re.compile(r"<[a-zA-Z][^\t\n\r\f />\x00]*")

#: `url -> tracking URL`, or None to leave that link alone.
LinkFor = Callable[[str], str | None]


def tracked(
    document: str, *, base: str, key: bytes, message: TrackedMessage, opens: bool, clicks: bool, issued: float
) -> str:
    """`document` as a message tracking `opens` and/or `clicks` sends it: its links through `base`/t/c/…, the
    pixel `base`/t/o/…; links to streamapp itself (the unsubscribe page, tracking) stay as they are."""
    if not (opens or clicks):
        return document
    own = (f"{base}/u/", f"{base}/t/")

    def link_for(url: str) -> str | None:
        if url.startswith(own):
            return None
        return f"{base}/t/c/{make_token(key, 'click', message, url, issued_at=issued)}"

    pixel = f"{base}/t/o/{make_token(key, 'open', message, issued_at=issued)}" if opens else None
    return rewrite(document, link_for if clicks else None, pixel)


def pixel_tag(url: str) -> str:
    """The 1x1 open pixel: invisible, no border, described as nothing to screen readers."""
    src = html.escape(url, quote=True)
    return f'<img src="{src}" width="1" height="1" alt="" style="border:0;width:1px;height:1px">'


def rewrite(document: str, link_for: LinkFor | None, pixel_url: str | None) -> str:
    """`document` with its trackable links rewritten by `link_for` and the pixel of `pixel_url` added."""
    finder = _LinkFinder(link_for)
    finder.feed(document)
    finder.close()
    edits = [(start, end, replacement) for start, end, replacement in finder.edits]
    if pixel_url is not None:
        at = finder.body_end if finder.body_end is not None else len(document)
        edits.append((at, at, pixel_tag(pixel_url)))
    if not edits:
        return document
    edits.sort(key=lambda edit: edit[0])
    parts, pos = [], 0
    for start, end, replacement in edits:
        parts.append(document[pos:start])
        parts.append(replacement)
        pos = end
    parts.append(document[pos:])
    return "".join(parts)


class _LinkFinder(HTMLParser):
    """Collects (start, end, new text) edits of `href` values, and where the last `</body>` starts."""

    def __init__(self, link_for: LinkFor | None) -> None:
        super().__init__(convert_charrefs=False)  # text is not looked at: no entity decoding to pay for
        self.link_for = link_for
        self.edits: list[tuple[int, int, str]] = []
        self.body_end: int | None = None
        self._line_starts = [0]
        self._text = ""

    def feed(self, data: str) -> None:
        self._text += data
        self._line_starts = [0] + [m.end() for m in re.finditer(r"\n", self._text)]
        super().feed(data)

    def parse_starttag(self, i: int) -> int:
        """Only `<a>` (and the elements whose content is text, `<script>`, `<style>`) are parsed further: any
        other start tag is only found whole and stepped over, which is where a newsletter's time went (its
        attributes split and unescaped, for nothing)."""
        name = _TAG_NAME.match(self.rawdata, i)
        tag = name.group()[1:].lower() if name else ""
        if tag == "a" or tag in self.CDATA_CONTENT_ELEMENTS:
            return int(super().parse_starttag(i))
        return int(self.check_for_whole_start_tag(i))

    def _offset(self) -> int:
        line, column = self.getpos()
        return self._line_starts[line - 1] + column

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "a" or self.link_for is None:
            return
        raw = self.get_starttag_text()
        if raw is None:
            return
        edit = self._href_edit(raw)
        if edit is not None:
            start, end, replacement = edit
            base = self._offset()
            self.edits.append((base + start, base + end, replacement))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag == "body":
            self.body_end = self._offset()

    def _href_edit(self, raw: str) -> tuple[int, int, str] | None:
        """The span of the first `href` value in the tag text and its replacement (None: left alone)."""
        name = _TAG_NAME.match(raw)
        if name is None or self.link_for is None:
            return None
        for match in _ATTRIBUTE.finditer(raw, name.end()):
            if match.group(1).lower() != "href":
                continue
            if match.group(3) is None:
                return None
            value, start, end = match.group(3), match.start(3), match.end(3)
            if value[:1] in ("'", '"'):
                value, start, end = value[1:-1], start + 1, end - 1
            url = html.unescape(value).strip()
            if not is_trackable(url):
                return None
            tracked = self.link_for(url)
            if tracked is None:
                return None
            escaped = html.escape(tracked, quote=True)
            quoted = raw[match.start(3)] in ("'", '"')
            return (start, end, escaped) if quoted else (start, end, f'"{escaped}"')
        return None
