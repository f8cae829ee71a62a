"""Reading tabular recipient data (CSV/TXT files and batch bodies) into commands: shared by imports and sending."""
