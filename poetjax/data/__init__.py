"""The data layer: corpus reading, the TFDS builder and the Grain input pipeline."""
