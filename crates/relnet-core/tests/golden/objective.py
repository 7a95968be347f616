#!/usr/bin/env python3
"""Golden values for relnet-core's relation losses, from the closed forms (standard library only).

BCE with logits:  l = softplus(-x) if t = 1 else softplus(x)
Focal (gamma 2, alpha 0.5, the reference code's):  0.5 * (1 - p_t)^2 * BCE,
  p_t = sigmoid(x) if t = 1 else 1 - sigmoid(x).
Run: python3 objective.py
"""
import math

sigmoid = lambda x: 1 / (1 + math.exp(-x))
softplus = lambda x: math.log1p(math.exp(x))
xs, ts = [2, -1, 0.5, -3], [1, 0, 0, 1]
bce = [softplus(-x) if t == 1 else softplus(x) for x, t in zip(xs, ts)]
pt = [sigmoid(x) if t == 1 else 1 - sigmoid(x) for x, t in zip(xs, ts)]
print("bce  ", bce)
print("focal", [0.5 * (1 - p) ** 2 * b for p, b in zip(pt, bce)])
