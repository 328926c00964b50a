"""What a project declares: its configuration, stages, datasets, parameters and machines.

Nothing here renders, runs or talks to a backend; the build and run layers read it.
"""
