"""What the runners share: arguments, embedded defaults, data, model loading, metrics and run records."""
