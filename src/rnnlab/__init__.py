"""rnnlab: Hydra-configured sweeps of recurrent networks on row-by-row MNIST."""

__version__ = "0.1.0"
