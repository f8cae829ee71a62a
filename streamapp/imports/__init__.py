"""File imports: watched drop folders and `streamapp import` (SPEC §5)."""
