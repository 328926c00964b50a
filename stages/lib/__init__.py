"""Code shared by the stages; a kernel carries each module its stage imports as a file."""
