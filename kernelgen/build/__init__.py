"""Turning a project's declarations into files: kernel folders (notebook and metadata),
wheel-house kernels and dataset folders, validated as the Kaggle client would.

Building is pure: the same inputs give byte-identical files.
"""
