"""Fine-tuning the student: LoRA, QLoRA or full, on one process or many (`launch`)."""
