"""Recognisers as ordered, named stages with a split point at every boundary."""
