"""Synthetic H&E-like phantom slides with ground truth, for the demo and the tests.

- :mod:`magflow.phantom.phantom`: the ``phantom`` step (one slide of the sheet, its label mask and metadata)
- :mod:`magflow.phantom.slide`: ``PhantomSpec`` and ``write_phantom`` (the pyramidal TIFF, labels, sidecar)
- :mod:`magflow.phantom.design`: the classes and their scale-dependent look
- :mod:`magflow.phantom.layout`, :mod:`magflow.phantom.cells`, :mod:`magflow.phantom.cross`: where tissue,
  cells and the planted cross-scale label go
- :mod:`magflow.phantom.render`, :mod:`magflow.phantom.sprites`, :mod:`magflow.phantom.noise`: drawing
"""
