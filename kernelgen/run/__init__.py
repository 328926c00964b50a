"""Running built kernels: on one work folder, through one backend, step by step or as a
scheduled chain, with the work folder's state kept on disk so a rerun resumes.
"""
