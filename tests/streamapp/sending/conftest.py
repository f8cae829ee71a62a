"""Fixtures of the sending tests (pytest_plugins is only allowed in the root conftest)."""

from tests.streamapp.mail.fixtures import peers  # noqa: F401
