"""Metadata helpers shared by the asset modules."""

import base64

import dagster as dg


def png_markdown(png: bytes, alt: str) -> dg.MetadataValue:
    """A PNG embedded in markdown metadata, so the Dagster UI shows the image itself."""
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")
