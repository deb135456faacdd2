"""The teacher client shared by every recipe: backends (OpenAI-compatible servers, local transformers),
the response cache, and `run_teacher` for any prompt. Recipes own their prompts and parsers."""
