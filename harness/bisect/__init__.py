"""Above the runner and the analysis: `qkbench find` bisects a repository's commits to the
first one that made a cell slower, one paired run per decision (docs/history.md)."""
