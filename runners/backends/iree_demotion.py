"""Whether IREE's contraction demotion (fp16/bf16 variants) really changed a compiled program.

--iree-global-opt-demote-contraction-inputs-* rewrites only the matmuls and convolutions that are still named linalg
ops when global optimisation runs. Many models have none left by then: at batch 1 a convolution whose unit dims were
folded, or a Gemm turned into a generic matvec, is a `linalg.generic` the pass does not touch. The module then
compiles to the very same program as fp32, and a variant labelled fp16 would be fp32 under another name. So the
program is compiled up to global optimisation first, and the demoted element type is looked for in that IR.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

# Element type each reduced precision demotes to, as MLIR spells it.
DEMOTED_TYPE = {"fp16": "f16", "bf16": "bf16"}


def type_mentions(ir: str, element_type: str) -> int:
    """How often the IR names `element_type` as a type (tensor<4x8xf16>, `f32 to f16`, !torch.vtensor<[4],f16>).
    The lookarounds keep out longer names: bf16 when looking for f16 (tensor<4xbf16> included), and CPU features
    such as +f16c or +avx512fp16 in the target attributes."""
    # Either the element type of a shaped type (a dim, or ? for a dynamic one, then x), or a whole word.
    return len(re.findall(rf"(?:(?<=[\d?]x)|(?<![\w+\-.])){re.escape(element_type)}(?![\w.])", ir))


def demotion_applied(reference_ir: str, optimized_ir: str, element_type: str) -> bool:
    """True when the IR compiled with the demotion flags names the demoted type more often than the reference: the
    same model compiled without them, or the imported model itself where that has no value of the type (then the
    reference cannot have any either, and one demoted value is enough)."""
    return type_mentions(optimized_ir, element_type) > type_mentions(reference_ir, element_type)


def check_demotion(precision: str, imported_mlir: Path, optimized_mlir: Path,
                   compile_reference: Callable[[], Path]) -> None:
    """Fails the candidate as "unavailable" when the demotion flags left the program unchanged.
    compile_reference compiles the model without them up to the same phase; it is called only for a model that
    already has values of the demoted type (rare: an f32 model never does)."""
    from speedster_run.shared.errors import CandidateError

    element_type = DEMOTED_TYPE.get(precision)
    if element_type is None:
        return
    reference = imported_mlir.read_text(errors="replace")
    if type_mentions(reference, element_type):
        reference = compile_reference().read_text(errors="replace")
    if not demotion_applied(reference, optimized_mlir.read_text(errors="replace"), element_type):
        raise CandidateError("unavailable", f"iree/{precision}: the demotion to {element_type} changed nothing for "
                                            "this model (IREE demotes only named matmul and convolution ops, and "
                                            "none was left): it would run as fp32")
