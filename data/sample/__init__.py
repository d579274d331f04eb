"""The bundled offline sample: real Yahoo daily prices in the lake schema (README.md)."""
