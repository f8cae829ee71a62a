"""Fixtures of the sending tests (pytest_plugins is only allowed in the root conftest)."""

from tests.mail.fixtures import peers, peers_module  # noqa: F401
from tests.sending.fixtures import sending  # noqa: F401
