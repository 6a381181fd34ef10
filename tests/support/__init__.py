"""Test-only agents, catalogs and process helpers."""
