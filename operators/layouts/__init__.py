"""Storage layouts: a pooling and an encoding per layout, and MUVERA."""
