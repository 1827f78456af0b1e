"""The dependency audit: a recording overlay of real trees, file owners, declarations, reports."""
