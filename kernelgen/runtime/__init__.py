"""What every kernel carries: where inputs and outputs are, and the error for bad inputs.

Stage modules import it as `from kernelgen.runtime import Layout, InputError`. Rendering
writes this package into each kernel beside the pipeline's own modules, so a kernel
needs kernelgen no more than it needs the pipeline installed. Only the standard
library may be imported here.
"""

from kernelgen.runtime.errors import InputError
from kernelgen.runtime.layout import Layout

__all__ = ["InputError", "Layout"]
