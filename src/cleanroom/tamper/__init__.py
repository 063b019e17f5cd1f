"""The `tamper` stage: fine-tuning attacks on each recipe's model, and which attack counts (`strongest.py`)."""
