from tests.streamapp.imports.fixtures import import_worker

__all__ = ["import_worker"]
