"""The network: tokens, the MMDiT backbone, its blocks, attention, positions, embeddings and presets."""
