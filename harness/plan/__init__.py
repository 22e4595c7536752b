"""Step 1 of the flow: a YAML file becomes a validated Config, and a Config becomes cells."""
