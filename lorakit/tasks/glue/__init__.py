"""GLUE and the embedded movie reviews: the task definitions (`catalog`), their data (`data`), and the glue task."""
