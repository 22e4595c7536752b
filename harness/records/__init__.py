"""Step 3 of the flow: the typed record of a cell, the run directory, and its one loader."""
