"""Stage 1: turn image pairs into instruction candidates (and, later, scored SFT records) on Ray Data."""
