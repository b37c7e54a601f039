"""The jobs: thin shells that start Ray, build the actors and run a recipe (one per command)."""
