"""The recipients domain: how a partition's commands change its recipients, history and batch records."""
