"""streamapp: recipient databases kept in sync from upstream systems, and e-mail sent on request."""

__version__ = "0.1.0"
