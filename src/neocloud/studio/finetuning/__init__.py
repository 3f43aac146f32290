"""LoRA fine-tuning of the studio's models (``/v1/fine_tuning/jobs``)."""
