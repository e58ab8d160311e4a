"""neuromas: train role-free neural multi-agent systems (LoRA agents on one frozen base model)."""

__version__ = "0.1.0"
