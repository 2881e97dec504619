"""Tools around the model: the demo checkpoint writer and the golden checker."""
