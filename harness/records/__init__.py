"""The typed record of a cell, the run directory, and its one loader."""
