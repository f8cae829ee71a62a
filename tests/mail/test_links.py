"""Link rewriting for tracking (streamapp.mail.links): only real `<a href>` http(s) links, in place."""

from __future__ import annotations

import html
from html.parser import HTMLParser

from streamapp.mail.links import rewrite, tracked
from streamapp.mail.tracking import TrackedMessage, read_token
from streamapp.settings import KeyRing

KEY = b"k" * 32
BASE = "https://mail.example.com"
MESSAGE = TrackedMessage("members", "42", "0003" + "a" * 28, "newsletter")


def marked(url: str) -> str:
    return f"T<{url}>"


class Hrefs(HTMLParser):
    """The `<a href>` values and `<img src>` values of a document, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "a" and values.get("href") is not None:
            self.hrefs.append(values["href"] or "")
        if tag == "img":
            self.images.append(values.get("src") or "")


def parsed(document: str) -> Hrefs:
    parser = Hrefs()
    parser.feed(document)
    parser.close()
    return parser


def test_http_links_are_rewritten_and_nothing_else_changes() -> None:
    doc = '<p>Hi <a href="https://shop.example/a">shop</a> and <a href="http://x.example/">x</a>.</p>'
    out = rewrite(doc, marked, None)
    assert out == (
        '<p>Hi <a href="T&lt;https://shop.example/a&gt;">shop</a> and <a href="T&lt;http://x.example/&gt;">x</a>.</p>'
    )
    assert parsed(out).hrefs == ["T<https://shop.example/a>", "T<http://x.example/>"]


def test_mailto_relative_fragment_and_other_schemes_stay() -> None:
    doc = (
        '<a href="mailto:help@example.com">m</a><a href="/relative">r</a><a href="#top">f</a>'
        '<a href="tel:+4612345">t</a><a href="javascript:alert(1)">j</a><a name="anchor">n</a><a>bare</a>'
    )
    assert rewrite(doc, marked, None) == doc


def test_attribute_order_case_and_quoting_are_kept() -> None:
    doc = (
        "<a class='btn' data-x=1 HREF='https://a.example/?q=1' target=_blank>a</a>"
        '<A title="t"\n   href = https://b.example/b id=b>b</A>'
    )
    out = rewrite(doc, marked, None)
    assert "<a class='btn' data-x=1 HREF='T&lt;https://a.example/?q=1&gt;' target=_blank>a</a>" in out
    assert '<A title="t"\n   href = "T&lt;https://b.example/b&gt;" id=b>b</A>' in out
    assert parsed(out).hrefs == ["T<https://a.example/?q=1>", "T<https://b.example/b>"]


def test_entities_in_a_link_are_decoded_before_it_is_tracked() -> None:
    doc = '<a href="https://a.example/?x=1&amp;y=2&#38;z=3">a</a> &amp; <b>&lt;keep&gt;</b>'
    seen: list[str] = []

    def record(url: str) -> str:
        seen.append(url)
        return "https://t.example/c?a=1&b=2"

    out = rewrite(doc, record, None)
    assert seen == ["https://a.example/?x=1&y=2&z=3"]
    assert out == '<a href="https://t.example/c?a=1&amp;b=2">a</a> &amp; <b>&lt;keep&gt;</b>'


def test_links_in_comments_scripts_and_styles_are_not_links() -> None:
    doc = (
        '<!-- <a href="https://comment.example/"> -->'
        "<script>document.write('<a href=\"https://script.example/\">')</script>"
        '<style>a[href="https://style.example/"] {}</style>'
        '<a href="https://real.example/">real</a>'
    )
    out = rewrite(doc, marked, None)
    assert out.count("T&lt;") == 1
    assert "T&lt;https://real.example/&gt;" in out
    assert "https://comment.example/" in out and "https://script.example/" in out


def test_no_links_and_no_pixel_leaves_the_document_untouched() -> None:
    doc = "<html><body><p>Plain text, no links.</p></body></html>"
    assert rewrite(doc, marked, None) == doc


def test_the_pixel_goes_before_the_last_body_end_or_at_the_end() -> None:
    with_body = "<html><body><p>x</p></body></html>"
    out = rewrite(with_body, None, "https://t.example/t/o/abc")
    assert out.endswith(
        '<img src="https://t.example/t/o/abc" width="1" height="1" alt="" style="border:0;width:1px;height:1px"></body></html>'
    )
    fragment = "<p>no body tag</p>"
    assert rewrite(fragment, None, "https://t.example/p").startswith(fragment + "<img ")
    assert parsed(rewrite(fragment, None, "https://t.example/p")).images == ["https://t.example/p"]


def test_tracked_keeps_the_unsubscribe_link_and_signs_the_others() -> None:
    unsubscribe = f"{BASE}/u/sometoken"
    doc = (
        f'<body><a href="https://shop.example/sale?id=7&amp;x=1">sale</a>'
        f'<a href="{unsubscribe}">unsubscribe</a><a href="mailto:a@b.se">mail</a></body>'
    )
    out = tracked(doc, base=BASE, key=KEY, message=MESSAGE, opens=True, clicks=True, issued=1_700_000_000)
    found = parsed(out)
    assert found.hrefs[1:] == [unsubscribe, "mailto:a@b.se"]
    click = found.hrefs[0]
    assert click.startswith(f"{BASE}/t/c/")
    target = read_token(KeyRing.of([KEY]), "click", click.rsplit("/", 1)[1])
    assert target is not None and target.url == "https://shop.example/sale?id=7&x=1"
    assert target.message == MESSAGE and target.issued == 1_700_000_000
    (pixel,) = found.images
    assert pixel.startswith(f"{BASE}/t/o/")
    assert read_token(KeyRing.of([KEY]), "open", pixel.rsplit("/", 1)[1]) is not None


def test_tracked_follows_the_switches() -> None:
    doc = '<body><a href="https://shop.example/">s</a></body>'
    assert tracked(doc, base=BASE, key=KEY, message=MESSAGE, opens=False, clicks=False, issued=0) == doc
    opens_only = tracked(doc, base=BASE, key=KEY, message=MESSAGE, opens=True, clicks=False, issued=0)
    assert parsed(opens_only).hrefs == ["https://shop.example/"] and len(parsed(opens_only).images) == 1
    clicks_only = tracked(doc, base=BASE, key=KEY, message=MESSAGE, opens=False, clicks=True, issued=0)
    assert parsed(clicks_only).images == [] and parsed(clicks_only).hrefs[0].startswith(f"{BASE}/t/c/")


def test_a_link_too_long_for_a_token_stays() -> None:
    url = "https://long.example/" + "x" * 3000
    doc = f'<a href="{html.escape(url)}">long</a>'
    assert rewrite(doc, marked, None) == doc
