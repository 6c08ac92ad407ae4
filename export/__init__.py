"""minmo_rt.export: PyTorch reference modules, checkpoint loaders, the bundle writer and the CLI.

Importable without a GPU. The reference modules are the numerical oracle every backend is
checked against.
"""
