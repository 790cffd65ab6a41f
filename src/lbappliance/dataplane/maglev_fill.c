/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The two per-slot loops of the Maglev table build (maglev.py), in C: the
 * fill, and mapping each slot's backend to its lb_backends index. Compiled
 * on first use and called through ctypes (maglev_native.py); the pure-Python
 * versions in maglev.py give the same bytes and are the fallback.
 */
#include <stdint.h>
#include <stdlib.h>

/* Let backends with w[i] > 0 take turns claiming the free (-1) slots of
 * table[size], each at the next free slot of its own permutation
 * pos[i] + j * step[i] (mod size). Backend i takes w[i] / max(w) turns per
 * round (credit carried over). pos[] is advanced in place. Returns 0, or -1
 * if no backend has weight (nothing can be filled) or memory runs out. */
int lb_maglev_fill(int32_t *table, uint32_t size, uint32_t n, uint32_t *pos,
		   const uint32_t *step, const uint32_t *w)
{
	uint64_t wmax = 0, *credit;
	uint32_t free_slots = 0, i, c, s;

	for (i = 0; i < n; i++)
		if (w[i] > wmax)
			wmax = w[i];
	for (c = 0; c < size; c++)
		free_slots += table[c] < 0;
	if (!free_slots)
		return 0;
	if (!wmax)
		return -1;
	credit = calloc(n, sizeof(*credit));
	if (!credit)
		return -1;
	i = n - 1; /* whose turn it was last */
	while (free_slots) {
		if (++i == n)
			i = 0;
		credit[i] += w[i];
		if (credit[i] < wmax)
			continue;
		credit[i] -= wmax;
		c = pos[i];
		s = step[i];
		while (table[c] >= 0) {
			c += s;
			if (c >= size)
				c -= size;
		}
		table[c] = (int32_t)i;
		c += s;
		pos[i] = c >= size ? c - size : c;
		free_slots--;
	}
	free(credit);
	return 0;
}

/* out[k * stride] = index[slots[k]] for k < size: the table as the
 * forwarder reads it (an array map's u32 values sit 8 bytes apart). */
void lb_maglev_map(uint32_t *out, uint32_t stride, const int32_t *slots,
		   const uint32_t *index, uint32_t size)
{
	for (uint32_t k = 0; k < size; k++)
		out[(uint64_t)k * stride] = index[slots[k]];
}

/* table[c] = -1 wherever gone[table[c]]: free the slots of failed backends. */
void lb_maglev_clear(int32_t *table, uint32_t size, const uint8_t *gone)
{
	for (uint32_t c = 0; c < size; c++)
		if (table[c] >= 0 && gone[table[c]])
			table[c] = -1;
}
