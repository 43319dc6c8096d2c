"""LyCORIS networks as exact per-layer updates, and low-rank truncation of any adapter from its factors.

``factors``: each LyCORIS form (LoHa, LoKr, Tucker cores, full differences) as one exact pair ``up @ down``,
so generate, fuse, merge and convert apply what LyCORIS computes. ``lowrank``: the SVD of a pair from a QR
of each factor and the small core, and kohya's rank criteria (rank, sv_fro, sv_ratio, sv_cumulative).
Imports nothing heavy at module level.
"""
