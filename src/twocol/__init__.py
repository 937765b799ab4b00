"""twocol: the two-GPU model-parallel AlexNet of Krizhevsky, Sutskever and Hinton (2012)."""

__version__ = "0.1.0"
