"""Code shared by the stages; rendering inlines the modules a stage imports."""
