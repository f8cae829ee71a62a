"""Tests for streamapp.mail.templates: sandboxed, strict, compiled-once message templates."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamapp.mail.templates import RenderError, TemplateLoadError, TemplateStore, html_to_text

RECIPIENT = {"originalId": "C1001", "email": "ann@example.com", "attributes": {"firstname": "Åsa", "score": 7}}
HISTORY = [{"type": "purchase", "sku": "SKU-1", "total": 199.0}, {"type": "purchase", "sku": "SKU-2", "total": 5.5}]


def write_template(root: Path, name: str, **files: str) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    for file, text in files.items():
        (folder / file.replace("_", ".")).write_text(text, encoding="utf-8")


def test_renders_recipient_properties_and_history(tmp_path: Path) -> None:
    write_template(
        tmp_path,
        "receipt",
        subject_txt="Hej {{ recipient.attributes.firstname }}, order {{ properties.orderNo }}\n",
        body_html="<p>{{ recipient.originalId }}: {% for h in history %}{{ h.sku }}={{ h.total }};{% endfor %}</p>",
        body_txt="{{ recipient.email }}\n{% for h in history %}\n{{ h.sku }}\n{% endfor %}\n",
    )
    store = TemplateStore.load(tmp_path, ["receipt"])
    out = store.render("receipt", RECIPIENT, {"orderNo": 42}, HISTORY)
    assert out.subject == "Hej Åsa, order 42"
    assert out.html == "<p>C1001: SKU-1=199.0;SKU-2=5.5;</p>"
    assert out.text == "ann@example.com\nSKU-1\nSKU-2\n"


@pytest.mark.parametrize(
    ("html", "variable"),
    [("<p>\n{{ firstname }}</p>", "firstname"), ("<p>\n{{ recipient.attributes.lastname }}</p>", "lastname")],
)
def test_undefined_variable_names_variable_file_and_line(tmp_path: Path, html: str, variable: str) -> None:
    write_template(tmp_path, "welcome", subject_txt="Hi", body_html=html)
    store = TemplateStore.load(tmp_path, ["welcome"])
    with pytest.raises(RenderError) as error:
        store.render("welcome", RECIPIENT, {}, [])
    assert str(error.value) == f"welcome/body.html line 2: '{variable}' is undefined"


def test_undefined_in_subject_is_not_a_blank(tmp_path: Path) -> None:
    write_template(tmp_path, "welcome", subject_txt="Hi {{ properties.code }}", body_html="<p>x</p>")
    store = TemplateStore.load(tmp_path, ["welcome"])
    with pytest.raises(RenderError, match=r"^welcome/subject.txt line 1: 'code' is undefined$"):
        store.render("welcome", RECIPIENT, {}, [])


@pytest.mark.parametrize(
    "expression",
    ["recipient.__class__.__mro__", "recipient.attributes.items.__self__.__class__", "history.__class__"],
)
def test_sandbox_blocks_internals(tmp_path: Path, expression: str) -> None:
    write_template(tmp_path, "evil", subject_txt="x", body_html=f"{{{{ {expression} }}}}")
    store = TemplateStore.load(tmp_path, ["evil"])
    with pytest.raises(RenderError, match=r"^evil/body.html line 1: access to attribute '__\w+__' of .* is unsafe"):
        store.render("evil", RECIPIENT, {}, HISTORY)


def test_html_is_autoescaped_but_subject_and_text_are_not(tmp_path: Path) -> None:
    value = "<b>Tom & Jerry</b>"
    body = "{{ recipient.attributes.firstname }}"
    write_template(tmp_path, "esc", subject_txt=body, body_html=f"<p>{body}</p>", body_txt=body)
    store = TemplateStore.load(tmp_path, ["esc"])
    out = store.render("esc", {**RECIPIENT, "attributes": {"firstname": value}}, {}, [])
    assert out.html == "<p>&lt;b&gt;Tom &amp; Jerry&lt;/b&gt;</p>"
    assert out.subject == value
    assert out.text == value


def test_subject_is_one_line_even_if_data_has_newlines(tmp_path: Path) -> None:
    write_template(tmp_path, "t", subject_txt="Hi {{ properties.name }}\n", body_html="x")
    out = TemplateStore.load(tmp_path, ["t"]).render("t", RECIPIENT, {"name": "Ann\r\nBcc: evil@example.com"}, [])
    assert out.subject == "Hi Ann Bcc: evil@example.com"


def test_text_part_is_derived_from_html_without_body_txt(tmp_path: Path) -> None:
    html = (
        "<html><head><title>T</title><style>p {color: red}</style></head><body>"
        "<h1>Hej {{ recipient.attributes.firstname }} &amp; v&auml;lkommen</h1>"
        '<p>Your   order is\n <a href="https://shop.example/o/1?a=1&amp;b=2">here</a>.<br>Thanks!</p>'
        '<ul><li>One</li><li>Two &euro;</li></ul><p><a href="https://shop.example">https://shop.example</a></p>'
        "</body></html>"
    )
    write_template(tmp_path, "t", subject_txt="s", body_html=html)
    out = TemplateStore.load(tmp_path, ["t"]).render("t", RECIPIENT, {}, [])
    assert out.text == (
        "Hej Åsa & välkommen\n\n"
        "Your order is here (https://shop.example/o/1?a=1&b=2).\nThanks!\n\n"
        "- One\n- Two €\n\n"
        "https://shop.example\n"
    )


def test_html_to_text_keeps_pre_and_table_rows() -> None:
    html = "<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table><pre>  x\n   y</pre><div>end</div>"
    assert html_to_text(html) == "a b\nc\n\n  x\n   y\n\nend\n"


def test_load_names_a_missing_file(tmp_path: Path) -> None:
    write_template(tmp_path, "t", subject_txt="s")
    with pytest.raises(TemplateLoadError, match=r"t/body\.html: missing"):
        TemplateStore.load(tmp_path, ["t"])
    with pytest.raises(TemplateLoadError, match=r"nope: template folder not found"):
        TemplateStore.load(tmp_path, ["nope"])


def test_load_names_file_and_line_of_a_syntax_error(tmp_path: Path) -> None:
    write_template(tmp_path, "t", subject_txt="s", body_html="<p>\n{% if x %}\n</p>")
    with pytest.raises(TemplateLoadError, match=r"t/body\.html: line \d: .*endif"):
        TemplateStore.load(tmp_path, ["t"])


def test_templates_are_compiled_once_at_load(tmp_path: Path) -> None:
    write_template(tmp_path, "t", subject_txt="s", body_html="v1")
    store = TemplateStore.load(tmp_path, ["t"])
    (tmp_path / "t" / "body.html").write_text("v2")
    assert store.render("t", RECIPIENT, {}, []).html == "v1"
    assert store.names == {"t"}
