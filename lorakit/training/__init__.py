"""Training: its arguments, the Trainer, the precision policy, run records, how a command ends."""
