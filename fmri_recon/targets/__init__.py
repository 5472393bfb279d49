"""What the brain model learns to predict: CLIP image tokens and the blurry branch's VAE latents."""
