"""minmo-tiny: synthetic speech data, training recipe and accuracy evaluation for a small MinMo."""
