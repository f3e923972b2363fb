/* SPDX-License-Identifier: GPL-2.0 */
/*
 * ImEE: the ImEE's own two-dimensional page table (Intel EPT or AMD NPT,
 * tdp_logic.h).  Never shared with KVM's MMU; filled one 4 KiB page at a
 * time on TDP faults, emptied by invalidations.
 *
 * Locking: the caller serializes imee_tdp_map() and imee_tdp_zap() (the
 * ImEE's mmu_lock); imee_tdp_topup() may sleep and runs without it.
 */
#ifndef IMEE_TDP_H
#define IMEE_TDP_H

#include <linux/atomic.h>
#include <linux/types.h>
#include "tdp_logic.h"

/* Pages all ImEEs hold: TDP tables, spares, pinned local pages (kvm.imee_pages) */
extern atomic_long_t imee_held_pages;

struct page;

struct imee_tdp {
	enum imee_tdp_format format;
	u64 *root;			/* PML4: 512 entries */
	struct page *spare[IMEE_TDP_LEVELS - 1]; /* tables for the next map */
	unsigned int nspare;
	unsigned long tables;		/* table pages in use, root included */
};

int imee_tdp_init(struct imee_tdp *tdp, enum imee_tdp_format format);
void imee_tdp_destroy(struct imee_tdp *tdp);
phys_addr_t imee_tdp_root_pa(const struct imee_tdp *tdp);

/* Make sure the next imee_tdp_map() needs no allocation.  May sleep. */
int imee_tdp_topup(struct imee_tdp *tdp);
/* Map @gfn to host physical @pa with @perms (IMEE_PERM_*); needs a topup before. */
void imee_tdp_map(struct imee_tdp *tdp, u64 gfn, phys_addr_t pa,
		  unsigned int perms);
/* Unmap [@start, @end); true if anything was mapped there. */
bool imee_tdp_zap(struct imee_tdp *tdp, u64 start, u64 end);

#endif /* IMEE_TDP_H */
