"""The pipelines. Importing them (as `zenml pipeline run` does) makes configuration errors print as one
message naming the file and key, without a traceback (DISTILL_NER_DEBUG=1 shows it)."""

from distill_ner.errors import install_excepthook

install_excepthook()
