"""The UniversalNER recipe: prompt and parser, negatives, conversations, NER data, benchmarks, metrics,
evaluation, serving. Imports only the shared core, never another recipe."""
