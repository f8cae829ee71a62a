from tests.imports.fixtures import import_worker

__all__ = ["import_worker"]
