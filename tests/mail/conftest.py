"""Fixtures of the mail tests (pytest_plugins is only allowed in the root conftest)."""

from tests.mail.fixtures import peers  # noqa: F401
