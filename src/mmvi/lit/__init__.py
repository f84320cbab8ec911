"""LightningModules tying model + objective."""
