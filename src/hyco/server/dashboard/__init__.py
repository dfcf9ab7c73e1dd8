"""The live dashboard (``/$dashboard``) and the HTTP inspector behind it (docs/operations.md)."""

__all__: list[str] = []
