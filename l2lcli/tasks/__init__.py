"""Task families, one module each; `base` holds the contract every family and problem batch follows."""
