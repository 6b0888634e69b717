"""`python -m onnx_operator`: run the operator (settings from flags or ONNX_OPERATOR_* env)."""

from __future__ import annotations

import sys

from onnx_operator.main import main

sys.exit(main())
