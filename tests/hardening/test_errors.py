"""vitedge.errors.first_line: the one-line reason vitedge shows for a library's exception."""
from vitedge.errors import first_line


def test_first_line_skips_openvino_location_lines():
    # the shape of the OpenVINO message an int8 LeViT compile raised (src/inference/src/cpp/core.cpp:117)
    e = RuntimeError("Exception from src/inference/src/cpp/core.cpp:117:\nException from src/inference/src/dev/"
                     "plugin.cpp:54:\n\n[ReshapeTransformation] END: node: Reshape CALLBACK HAS THROWN: shape\nmore")
    assert first_line(e) == "[ReshapeTransformation] END: node: Reshape CALLBACK HAS THROWN: shape"


def test_first_line_limits_and_falls_back_to_the_type():
    assert first_line(ValueError("  first\nsecond"), limit=3) == "fir"
    assert first_line(KeyError()) == "KeyError"
    assert first_line(RuntimeError("Exception from a.cpp:1:")) == "RuntimeError"
