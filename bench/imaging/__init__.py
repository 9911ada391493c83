"""Image I/O, masks and geometry shared by every adapter and method."""
