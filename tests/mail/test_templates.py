"""Tests for streamapp.mail.templates: sandboxed, strict, bounded, compiled-once message templates."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from streamapp.mail.templates import (
    RENDER_BYTES,
    RENDER_SECONDS,
    Declared,
    RenderError,
    TemplateLoadError,
    TemplateStore,
    html_to_text,
)

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


# --- declared names (SPEC §2) ----------------------------------------------------------------

DECLARED = {"t": Declared(attributes=frozenset({"firstname", "zipcode"}), properties=frozenset({"coupon"}))}
NO_NAME = {"originalId": "C2", "email": "bo@example.com", "attributes": {"zipcode": "41101"}}


def test_a_declared_but_unset_attribute_renders_empty_and_default_replaces_it(tmp_path: Path) -> None:
    write_template(
        tmp_path,
        "t",
        subject_txt='Hello {{ recipient.attributes.firstname | default("friend") }}',
        body_html="<p>[{{ recipient.attributes.firstname }}] {{ recipient.attributes.zipcode | d('x') }}</p>",
        body_txt="{% if recipient.attributes.firstname %}named{% else %}anonymous{% endif %}\n",
    )
    out = TemplateStore.load(tmp_path, ["t"], DECLARED).render("t", NO_NAME, {}, [])
    assert (out.subject, out.html, out.text) == ("Hello friend", "<p>[] 41101</p>", "anonymous")


def test_default_keeps_falsy_values_unless_boolean(tmp_path: Path) -> None:
    write_template(
        tmp_path,
        "t",
        subject_txt="s",
        body_html="{{ properties.n | default(7) }} {{ properties.e | default('-', true) }}",
    )
    out = TemplateStore.load(tmp_path, ["t"]).render("t", RECIPIENT, {"n": 0, "e": ""}, [])
    assert out.html == "0 -"


def test_a_declared_optional_property_is_none_when_not_sent(tmp_path: Path) -> None:
    write_template(
        tmp_path, "t", subject_txt="s", body_html="{% if properties.coupon %}C{% endif %}{{ properties.coupon }}."
    )
    store = TemplateStore.load(tmp_path, ["t"], DECLARED)
    assert store.render("t", NO_NAME, {}, []).html == "."
    assert store.render("t", NO_NAME, {"coupon": "X1"}, []).html == "CX1."


def test_an_undeclared_attribute_still_fails_the_message_with_its_name(tmp_path: Path) -> None:
    write_template(tmp_path, "t", subject_txt="s", body_html="<p>\n{{ recipient.attributes.frstname | upper }}</p>")
    with pytest.raises(RenderError, match=r"^t/body.html line 2: 'frstname' is undefined$"):
        TemplateStore.load(tmp_path, ["t"], DECLARED).render("t", NO_NAME, {}, [])


def test_recipient_status_and_message_fields_render(tmp_path: Path) -> None:
    write_template(tmp_path, "t", subject_txt="s", body_html="{{ recipient.status }} {{ message.messageId }}")
    out = TemplateStore.load(tmp_path, ["t"]).render(
        "t", {**RECIPIENT, "status": "active"}, {}, [], {"messageId": "m1"}
    )
    assert out.html == "active m1"


def test_a_format_string_cannot_reach_internals(tmp_path: Path) -> None:
    write_template(tmp_path, "t", subject_txt="s", body_html="{{ '{0.__class__}'.format(recipient) }}")
    store = TemplateStore.load(tmp_path, ["t"])
    with pytest.raises(RenderError, match=r"^t/body.html line 1: access to attribute '__class__' of 'dict'"):
        store.render("t", RECIPIENT, {}, [])


# --- render bounds ---------------------------------------------------------------------------


def test_a_render_over_the_time_bound_fails_within_it(tmp_path: Path) -> None:
    loops = "{% set xs = range(100000) | list %}{% for a in xs %}{% for b in xs %}{% endfor %}{% endfor %}"
    write_template(tmp_path, "t", subject_txt="s", body_html=loops)
    store = TemplateStore.load(tmp_path, ["t"])
    started = time.perf_counter()
    with pytest.raises(RenderError, match=r"^t/body.html line 1: rendering took over 1 s$"):
        store.render("t", RECIPIENT, {}, [])
    assert time.perf_counter() - started < RENDER_SECONDS + 0.5


def test_a_render_over_the_size_bound_fails(tmp_path: Path) -> None:
    write_template(
        tmp_path, "t", subject_txt="s", body_html="{% for a in range(100000) %}{{ '0123456789' }}{% endfor %}"
    )
    with pytest.raises(RenderError, match=rf"^t/body.html: the rendered message is over {RENDER_BYTES:,} bytes$"):
        TemplateStore.load(tmp_path, ["t"]).render("t", RECIPIENT, {}, [])


@pytest.mark.parametrize(("expression", "operator"), [("'x' * 100000000", "'*'"), ("7 ** 100000000", "'**'")])
def test_huge_products_are_refused_before_they_are_built(tmp_path: Path, expression: str, operator: str) -> None:
    write_template(tmp_path, "t", subject_txt="s", body_html=f"{{{{ {expression} }}}}")
    with pytest.raises(RenderError, match=rf"^t/body.html line 1: {re.escape(operator)} would build"):
        TemplateStore.load(tmp_path, ["t"]).render("t", RECIPIENT, {}, [])


def test_a_bound_fails_one_render_only(tmp_path: Path) -> None:
    write_template(tmp_path, "t", subject_txt="s", body_html="{{ '-' * properties.n }}")
    store = TemplateStore.load(tmp_path, ["t"])
    with pytest.raises(RenderError):
        store.render("t", RECIPIENT, {"n": 10**7}, [])
    assert store.render("t", RECIPIENT, {"n": 3}, []).html == "---"
