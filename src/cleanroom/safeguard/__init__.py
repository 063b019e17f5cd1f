"""The `safeguard` stage: post-hoc safeguards (unlearning, refusal training) on a trained model."""
