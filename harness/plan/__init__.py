"""A YAML file becomes a validated Config, and a Config becomes cells."""
