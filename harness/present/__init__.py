"""Step 5 of the flow: what a person reads — the console, figures and the HTML report."""
