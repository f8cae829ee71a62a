"""Pure rules and records: no Faust, no aiohttp, no I/O (docs/architecture.md)."""
