// SPDX-License-Identifier: GPL-2.0
/*
 * ImEE: the ImEE's own EPT (see ept.h).  Entry encoding is in ept_logic.h.
 */

#include <linux/gfp.h>
#include <linux/io.h>
#include <linux/kernel.h>
#include <linux/mm.h>
#include "ept.h"

atomic_long_t imee_held_pages = ATOMIC_LONG_INIT(0);

static u64 *imee_table_va(u64 entry)
{
	return __va(entry & IMEE_EPT_ADDR_MASK);
}

int imee_ept_init(struct imee_ept *ept)
{
	struct page *root = alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO);

	if (!root)
		return -ENOMEM;
	atomic_long_inc(&imee_held_pages);
	ept->root = page_address(root);
	ept->nspare = 0;
	ept->tables = 1;
	return 0;
}

static void imee_free_table(u64 *table, int level)
{
	int i;

	if (level > 1) {
		for (i = 0; i < IMEE_EPT_ENTRIES; i++)
			if (table[i] & IMEE_EPT_RWX)
				imee_free_table(imee_table_va(table[i]),
						level - 1);
	}
	free_page((unsigned long)table);
	atomic_long_dec(&imee_held_pages);
}

void imee_ept_destroy(struct imee_ept *ept)
{
	while (ept->nspare) {
		__free_page(ept->spare[--ept->nspare]);
		atomic_long_dec(&imee_held_pages);
	}
	if (ept->root)
		imee_free_table(ept->root, IMEE_EPT_LEVELS);
	ept->root = NULL;
	ept->tables = 0;
}

u64 imee_ept_pointer(const struct imee_ept *ept)
{
	return imee_eptp(__pa(ept->root));
}

int imee_ept_topup(struct imee_ept *ept)
{
	while (ept->nspare < ARRAY_SIZE(ept->spare)) {
		struct page *p = alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO);

		if (!p)
			return -ENOMEM;
		atomic_long_inc(&imee_held_pages);
		ept->spare[ept->nspare++] = p;
	}
	return 0;
}

void imee_ept_map(struct imee_ept *ept, u64 gfn, phys_addr_t pa, u64 perms)
{
	u64 *table = ept->root;
	int level;

	for (level = IMEE_EPT_LEVELS; level > 1; level--) {
		u64 *slot = &table[imee_ept_index(gfn, level)];

		if (!(*slot & IMEE_EPT_RWX)) {
			struct page *p;

			if (WARN_ON_ONCE(!ept->nspare))
				return;
			p = ept->spare[--ept->nspare];
			ept->tables++;
			/* the zeroed table is visible before the entry */
			smp_wmb();
			WRITE_ONCE(*slot, imee_ept_table_entry(page_to_phys(p)));
		}
		table = imee_table_va(*slot);
	}
	WRITE_ONCE(table[imee_ept_index(gfn, 1)], imee_ept_leaf(pa, perms));
}

static bool imee_zap_table(u64 *table, int level, u64 base, u64 start, u64 end)
{
	u64 span = 1ULL << (9 * (level - 1));	/* GFNs per entry */
	u64 first = start > base ? (start - base) / span : 0;
	u64 last = min_t(u64, (end - 1 - base) / span, IMEE_EPT_ENTRIES - 1);
	bool any = false;
	u64 i;

	for (i = first; i <= last; i++) {
		u64 entry = READ_ONCE(table[i]);

		if (!(entry & IMEE_EPT_RWX))
			continue;
		if (level == 1) {
			WRITE_ONCE(table[i], 0);
			any = true;
		} else {
			any |= imee_zap_table(imee_table_va(entry), level - 1,
					      base + i * span, start, end);
		}
	}
	return any;
}

bool imee_ept_zap(struct imee_ept *ept, u64 start, u64 end)
{
	end = min_t(u64, end, IMEE_EPT_MAX_GFN + 1);
	if (start >= end)
		return false;
	return imee_zap_table(ept->root, IMEE_EPT_LEVELS, 0, start, end);
}
