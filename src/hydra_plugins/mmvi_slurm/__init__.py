"""Hydra plugins of mmvi: the SLURM launcher (``hydra/launcher=slurm``)."""
