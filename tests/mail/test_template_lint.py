"""Tests for streamapp.mail.template_lint: every name a template uses, against the configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamapp.mail.template_lint import check_templates
from streamapp.settings import load_settings

CONFIG = """
[[databases]]
name = "members"
[databases.attributes]
firstname = "string"
zipcode = "string"

[[databases]]
name = "open"
auto_create_attributes = true

[[triggers]]
name = "welcome"
database = "members"
template = "t"
properties = { code = "string", amount = "float?" }
"""


def lint(tmp_path: Path, extra: str = "", **files: str) -> list[str]:
    """The issues of template `t`: `body_html="..."` writes t/body.html (subject and body default to "x")."""
    for file, text in {"subject_txt": "x", "body_html": "x", **files}.items():
        write(tmp_path / "templates" / "t" / file.replace("_", "."), text)
    config = tmp_path / "streamapp.toml"
    config.write_text(CONFIG + extra)
    root = f"{(tmp_path / 'templates').resolve()}/"
    return [str(issue).removeprefix(root) for issue in check_templates(load_settings(config, {}))]


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_declared_names_pass(tmp_path: Path) -> None:
    body = (
        "{{ recipient.attributes.firstname | default('friend') }} {{ recipient.attributes['zipcode'] }}"
        " {{ recipient.attributes.get('firstname') }} {{ recipient.email }} {{ recipient.status }}"
        " {{ properties.code }} {{ properties.get('amount', 0) }} {% for k, v in properties.items() %}{{ k }}{% endfor %}"
        " {% for h in history %}{{ h.sku }} {{ loop.index }}{% endfor %} {{ message.messageId }} {{ range(2) | list }}"
        " {% set n = 1 %}{{ n }} {% macro m(a) %}{{ a }}{% endmacro %}{{ m(1) }}"
    )
    assert lint(tmp_path, body_html=body, body_txt="{{ recipient.originalId }}") == []


@pytest.mark.parametrize(
    ("body", "issue"),
    [
        (
            "<p>\n{{ recipient.attributes.frstname }}</p>",
            "t/body.html: line 2: attribute 'frstname' is not declared by database 'members' (used by trigger 'welcome')",
        ),
        ("{{ recipient.attributes['zip'] }}", "t/body.html: line 1: attribute 'zip' is not declared by database"),
        ("{{ recipient.attributes.get('zip') }}", "t/body.html: line 1: attribute 'zip' is not declared by database"),
        (
            "\n\n{{ properties.cod }}",
            "t/body.html: line 3: property 'cod' is not declared by trigger 'welcome' (declared: amount, code)",
        ),
        ("{{ properties['x y'] }}", "t/body.html: line 1: property 'x y' is not declared by trigger 'welcome'"),
        (
            "\n{{ firstname }}",
            "t/body.html: line 2: unknown variable 'firstname' (known: history, message, properties, recipient)",
        ),
        ("{{ recipient.frstname }}", "t/body.html: line 1: recipient has no field 'frstname'"),
        ("{{ message.name }}", "t/body.html: line 1: message has no field 'name' (fields: messageId, priority)"),
        ("<p>\n{% if x %}\n</p>", "t/body.html: line 3: Unexpected end of template."),
        ("{{ 1 | nofilter }}", "t/body.html: line 1: No filter named 'nofilter'."),
    ],
)
def test_an_unknown_name_is_an_issue_naming_file_line_and_name(tmp_path: Path, body: str, issue: str) -> None:
    found = lint(tmp_path, body_html=body)
    assert len(found) == 1 and found[0].startswith(issue), found


def test_subject_and_text_are_linted_too(tmp_path: Path) -> None:
    found = lint(tmp_path, subject_txt="Hi {{ properties.nope }}", body_txt="{{ nope }}")
    assert [f.split(": ")[0] for f in found] == ["t/subject.txt", "t/body.txt"]


def test_a_loop_variable_used_outside_its_loop_is_reported_where_it_is_unbound(tmp_path: Path) -> None:
    body = "{% for h in history %}\n{{ h.sku }}{% endfor %}\n\n{{ h }}"
    assert lint(tmp_path, body_html=body) == [
        "t/body.html: line 4: unknown variable 'h' (known: history, message, properties, recipient)"
    ]


def test_an_included_file_is_linted_with_the_template(tmp_path: Path) -> None:
    write(tmp_path / "templates" / "parts" / "footer.html", "\n{{ footer }}")
    found = lint(tmp_path, body_html="{% include 'parts/footer.html' %}")
    assert found == [
        "parts/footer.html: line 2: unknown variable 'footer' (known: history, message, properties, recipient)"
    ]


def test_a_shared_template_is_linted_against_each_use(tmp_path: Path) -> None:
    others = (
        '[[campaigns]]\nname = "news"\ndatabase = "open"\ntemplate = "t"\n'
        '[[triggers]]\nname = "loose"\ndatabase = "members"\ntemplate = "t"\n'
    )
    body = "{{ recipient.attributes.anything }} {{ properties.free }}"
    assert lint(tmp_path, others, body_html=body) == [
        "t/body.html: line 1: attribute 'anything' is not declared by database 'members' (used by trigger 'welcome')",
        "t/body.html: line 1: property 'free' is not declared by trigger 'welcome' (declared: amount, code)",
        "t/body.html: line 1: attribute 'anything' is not declared by database 'members' (used by trigger 'loose')",
    ]  # campaign 'news': auto_create_attributes and no declared properties, so any name


def test_the_shipped_configuration_is_clean() -> None:
    root = Path(__file__).resolve().parents[2]
    assert check_templates(load_settings(root / "config" / "streamapp.toml", {})) == []
