"""edgepose: GluonCV's pose model zoo on edge runtimes (ONNX Runtime, TensorRT).

``import edgepose`` stays light: NumPy, OpenCV and one backend. The converters
(``edgepose.converters``, which need ``onnx``) and the CLI (``typer``) are only
imported when used.
"""
__version__ = "0.1.0"

from edgepose.errors import EdgeposeError  # noqa: E402

__all__ = ["EdgeposeError", "__version__"]
