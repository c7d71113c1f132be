"""splitasr: speech recognition split between an edge device and the cloud.

Data flows one way: audio -> features -> head -> codec -> wire -> codec -> tail -> decoder.
"""

__version__ = "0.1.0"
