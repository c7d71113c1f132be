"""The edge on ONNX Runtime: the heads and the codecs' device parts exported to ONNX
(:mod:`splitasr.onnx.export`, needs torch) and run without torch
(:mod:`splitasr.onnx.edge`). See docs/edge.md."""
