"""The memory fabric: LoRA adapters loaded live beside a GGUF base model."""
