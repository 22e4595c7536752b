"""What a person reads — the console, figures and the HTML report."""
