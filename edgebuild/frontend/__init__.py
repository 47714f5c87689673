"""Reading a recipe: YAML with locations, schema validation, the checked Recipe and its targets."""
