"""The imaging engine: plan what to store, capture into a repository, restore, verify."""
