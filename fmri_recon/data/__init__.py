"""The dataset on disk: NSD's layout, the synthetic dataset, hub downloads, upstream's released files."""
