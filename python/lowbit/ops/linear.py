"""Mixed-precision linear ops: ``y = x @ dequantize(weight).T + bias``.

(placeholder: each kernel family fills in its wrapper and fake implementation)
"""
