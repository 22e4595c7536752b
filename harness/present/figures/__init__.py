"""Presentation: the figures, one module per family (style.py holds the common look)."""
