"""The comparison: tables, their text formats, plots, and the notes above them."""
