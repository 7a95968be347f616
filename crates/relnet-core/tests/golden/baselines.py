#!/usr/bin/env python3
"""Golden values for relnet-core's baseline losses, from the closed forms (standard library only).

NT-Xent (SimCLR), rows i and (i + N/2) mod N are partners, cosine similarity s, temperature t:
  ratio_i = exp(s(i, p(i)) / t) / sum_{j != i} exp(s(i, j) / t)
  mean-log = mean_i -log ratio_i          log-mean (reference code) = -log mean_i ratio_i
Deep InfoMax (beta 1, gamma 0.1), logits of the local (T) and prior (P) discriminators:
  beta * (mean softplus(T_neg) + mean softplus(-T_pos)) + gamma * (mean softplus(-P(u)) + mean softplus(P(y)))
  (= -gamma * (mean log sigmoid(P(u)) + mean log(1 - sigmoid(P(y)))) for the prior part).
Run: python3 baselines.py
"""
import math

z = [[1.0, 0.0, 0.5], [0.2, 1.0, -0.3], [0.9, 0.1, 0.4], [-0.1, 0.8, 0.0]]
t = 0.5
n = len(z)
unit = [[v / math.sqrt(sum(x * x for x in r)) for v in r] for r in z]
cos = lambda a, b: sum(x * y for x, y in zip(a, b))
ratios = []
for i in range(n):
    p = (i + n // 2) % n
    num = math.exp(cos(unit[i], unit[p]) / t)
    den = sum(math.exp(cos(unit[i], unit[j]) / t) for j in range(n) if j != i)
    ratios.append(num / den)
print("nt_xent mean-log", sum(-math.log(r) for r in ratios) / n)
print("nt_xent log-mean", -math.log(sum(ratios) / n))

softplus = lambda x: math.log1p(math.exp(x))
sigmoid = lambda x: 1 / (1 + math.exp(-x))
mean = lambda v: sum(v) / len(v)
t_pos, t_neg = [1.0, -0.5, 2.0, 0.3], [-1.0, 0.2, 0.7, -2.0]
p_prior, p_feat = [0.5, -1.5], [1.2, -0.4]
local = mean([softplus(x) for x in t_neg]) + mean([softplus(-x) for x in t_pos])
prior = -(mean([math.log(sigmoid(x)) for x in p_prior]) + mean([math.log(1 - sigmoid(x)) for x in p_feat]))
print("dim", 1.0 * local + 0.1 * prior)
