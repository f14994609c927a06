"""Pure figure builders: frames in, Plotly figures out. No store access here."""
