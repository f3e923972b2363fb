/* SPDX-License-Identifier: GPL-2.0 */
/*
 * ImEE: the ImEE's own EPT.  Never shared with KVM's MMU; filled one 4 KiB
 * page at a time on EPT violations, emptied by invalidations.
 *
 * Locking: the caller serializes imee_ept_map() and imee_ept_zap() (the
 * ImEE's mmu_lock); imee_ept_topup() may sleep and runs without it.
 */
#ifndef IMEE_EPT_H
#define IMEE_EPT_H

#include <linux/atomic.h>
#include <linux/types.h>
#include "ept_logic.h"

/* Pages all ImEEs hold: EPT tables, spares, pinned local pages (kvm.imee_pages) */
extern atomic_long_t imee_held_pages;

struct page;

struct imee_ept {
	u64 *root;			/* PML4: 512 entries */
	struct page *spare[IMEE_EPT_LEVELS - 1]; /* tables for the next map */
	unsigned int nspare;
	unsigned long tables;		/* table pages in use, root included */
};

int imee_ept_init(struct imee_ept *ept);
void imee_ept_destroy(struct imee_ept *ept);
u64 imee_ept_pointer(const struct imee_ept *ept);

/* Make sure the next imee_ept_map() needs no allocation.  May sleep. */
int imee_ept_topup(struct imee_ept *ept);
/* Map @gfn to host physical @pa with @perms; needs a topup before. */
void imee_ept_map(struct imee_ept *ept, u64 gfn, phys_addr_t pa, u64 perms);
/* Unmap [@start, @end); true if anything was mapped there. */
bool imee_ept_zap(struct imee_ept *ept, u64 start, u64 end);

#endif /* IMEE_EPT_H */
