"""What the network learns and how it samples: rectified flow, Gaussian diffusion, samplers, guidance."""
