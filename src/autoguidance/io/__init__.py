"""Files in and out: the restricted unpickler, EDM2's network files."""
