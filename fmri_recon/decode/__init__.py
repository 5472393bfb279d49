"""From brain-model outputs to images and captions: weights, unCLIP, GIT, converters, refinement."""
