"""randlr_jax: learning rates you do not tune, for JAX and Optax.

Public surface is re-exported explicitly here; private modules hold one concept each.
"""

__version__ = "0.1.0"
