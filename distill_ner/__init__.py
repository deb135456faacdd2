"""distill-ner: distil open information extraction from a teacher LLM into a small student.

Pure functions and typed records; the ZenML steps in steps/ are thin wrappers over this package.
"""

__version__ = "0.1.0"
