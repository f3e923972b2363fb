// SPDX-License-Identifier: GPL-2.0
/*
 * ImEE: the ImEE's own TDP (see tdp.h).  Entry encodings are in tdp_logic.h;
 * with SME, table and leaf addresses carry the encryption bit (__sme_set),
 * as in KVM's own NPT.
 */

#include <linux/gfp.h>
#include <linux/io.h>
#include <linux/kernel.h>
#include <linux/mm.h>
#include <linux/mem_encrypt.h>
#include "tdp.h"

atomic_long_t imee_held_pages = ATOMIC_LONG_INIT(0);

static u64 *imee_table_va(u64 entry)
{
	return __va(__sme_clr(entry & IMEE_TDP_ADDR_MASK));
}

int imee_tdp_init(struct imee_tdp *tdp, enum imee_tdp_format format)
{
	struct page *root = alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO);

	if (!root)
		return -ENOMEM;
	atomic_long_inc(&imee_held_pages);
	tdp->format = format;
	tdp->root = page_address(root);
	tdp->nspare = 0;
	tdp->tables = 1;
	return 0;
}

static void imee_free_table(const struct imee_tdp *tdp, u64 *table, int level)
{
	int i;

	if (level > 1) {
		for (i = 0; i < IMEE_TDP_ENTRIES; i++)
			if (imee_tdp_present(tdp->format, table[i]))
				imee_free_table(tdp, imee_table_va(table[i]),
						level - 1);
	}
	free_page((unsigned long)table);
	atomic_long_dec(&imee_held_pages);
}

void imee_tdp_destroy(struct imee_tdp *tdp)
{
	while (tdp->nspare) {
		__free_page(tdp->spare[--tdp->nspare]);
		atomic_long_dec(&imee_held_pages);
	}
	if (tdp->root)
		imee_free_table(tdp, tdp->root, IMEE_TDP_LEVELS);
	tdp->root = NULL;
	tdp->tables = 0;
}

phys_addr_t imee_tdp_root_pa(const struct imee_tdp *tdp)
{
	return __pa(tdp->root);
}

int imee_tdp_topup(struct imee_tdp *tdp)
{
	while (tdp->nspare < ARRAY_SIZE(tdp->spare)) {
		struct page *p = alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO);

		if (!p)
			return -ENOMEM;
		atomic_long_inc(&imee_held_pages);
		tdp->spare[tdp->nspare++] = p;
	}
	return 0;
}

void imee_tdp_map(struct imee_tdp *tdp, u64 gfn, phys_addr_t pa,
		  unsigned int perms)
{
	u64 *table = tdp->root;
	int level;

	for (level = IMEE_TDP_LEVELS; level > 1; level--) {
		u64 *slot = &table[imee_tdp_index(gfn, level)];

		if (!imee_tdp_present(tdp->format, *slot)) {
			struct page *p;
			u64 entry;

			if (WARN_ON_ONCE(!tdp->nspare))
				return;
			p = tdp->spare[--tdp->nspare];
			tdp->tables++;
			/* the zeroed table is visible before the entry */
			smp_wmb();
			entry = imee_tdp_table_entry(tdp->format,
						     __sme_set(page_to_phys(p)));
			WRITE_ONCE(*slot, entry);
		}
		table = imee_table_va(*slot);
	}
	WRITE_ONCE(table[imee_tdp_index(gfn, 1)],
		   imee_tdp_leaf(tdp->format, __sme_set(pa), perms));
}

static bool imee_zap_table(const struct imee_tdp *tdp, u64 *table, int level,
			   u64 base, u64 start, u64 end)
{
	u64 span = 1ULL << (9 * (level - 1));	/* GFNs per entry */
	u64 first = start > base ? (start - base) / span : 0;
	u64 last = min_t(u64, (end - 1 - base) / span, IMEE_TDP_ENTRIES - 1);
	bool any = false;
	u64 i;

	for (i = first; i <= last; i++) {
		u64 entry = READ_ONCE(table[i]);

		if (!imee_tdp_present(tdp->format, entry))
			continue;
		if (level == 1) {
			WRITE_ONCE(table[i], 0);
			any = true;
		} else {
			any |= imee_zap_table(tdp, imee_table_va(entry),
					      level - 1, base + i * span,
					      start, end);
		}
	}
	return any;
}

bool imee_tdp_zap(struct imee_tdp *tdp, u64 start, u64 end)
{
	end = min_t(u64, end, IMEE_TDP_MAX_GFN + 1);
	if (start >= end)
		return false;
	return imee_zap_table(tdp, tdp->root, IMEE_TDP_LEVELS, 0, start, end);
}
