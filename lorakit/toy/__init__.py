"""The toy teacher–student model of the paper (§3): optimal learning rate against width for Init[A] and Init[B]."""
