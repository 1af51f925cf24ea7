"""poetjax: classical Chinese poetry with JAX and Flax."""
