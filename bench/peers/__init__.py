"""The operators vworkspace is measured against (bench/bench_operators.py): a kopf peer and a bare
write loop. Neither imports vworkspace, so their memory figures are their own."""
