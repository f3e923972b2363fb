/* SPDX-License-Identifier: GPL-2.0 */
/*
 * ImEE: the pure parts of the ImEE's EPT -- entry encoding and how an EPT
 * violation of the ImEE vCPU is classified.  No kernel dependencies beyond
 * fixed-width integers, so tests/unit builds this header in user space and
 * checks it against the Intel SDM's bit definitions.
 *
 * The kernel includes it after <linux/types.h>; user space after <stdint.h>
 * with IMEE_EPT_USER defined.
 */
#ifndef IMEE_EPT_LOGIC_H
#define IMEE_EPT_LOGIC_H

#ifdef IMEE_EPT_USER
#include <stdint.h>
typedef uint64_t imee_u64;
#else
typedef u64 imee_u64;
#endif

/* EPT paging-structure entry bits (SDM vol. 3, 29.3.2) */
#define IMEE_EPT_R		(1ULL << 0)
#define IMEE_EPT_W		(1ULL << 1)
#define IMEE_EPT_X		(1ULL << 2)
#define IMEE_EPT_RWX		(IMEE_EPT_R | IMEE_EPT_W | IMEE_EPT_X)
#define IMEE_EPT_MT_WB		(6ULL << 3)	/* leaf: memory type write-back */
#define IMEE_EPT_IPAT		(1ULL << 6)	/* leaf: ignore guest PAT */
#define IMEE_EPT_ADDR_MASK	0x000ffffffffff000ULL

/* EPTP (SDM 25.6.11): WB paging structures, 4 levels, A/D flags OFF */
#define IMEE_EPTP_MT_WB		6ULL
#define IMEE_EPTP_LEVELS_4	(3ULL << 3)
#define IMEE_EPTP_AD		(1ULL << 6)	/* never set by ImEE */

#define IMEE_EPT_LEVELS		4
#define IMEE_EPT_ENTRIES	512
#define IMEE_EPT_MAX_GFN	((1ULL << (48 - 12)) - 1)	/* 4-level EPT */

/* EPT violation exit qualification (SDM 28.2.1, table 28-7) */
#define IMEE_QUAL_READ		(1ULL << 0)
#define IMEE_QUAL_WRITE		(1ULL << 1)
#define IMEE_QUAL_FETCH		(1ULL << 2)
#define IMEE_QUAL_GLA_VALID	(1ULL << 7)
#define IMEE_QUAL_TRANSLATED	(1ULL << 8) /* 0: a paging-structure access */

static inline imee_u64 imee_eptp(imee_u64 root_pa)
{
	return (root_pa & IMEE_EPT_ADDR_MASK) | IMEE_EPTP_MT_WB |
	       IMEE_EPTP_LEVELS_4;
}

/* A non-leaf entry: every permission, the leaf decides. */
static inline imee_u64 imee_ept_table_entry(imee_u64 table_pa)
{
	return (table_pa & IMEE_EPT_ADDR_MASK) | IMEE_EPT_RWX;
}

/* A 4 KiB leaf with permissions @perms (IMEE_EPT_R/W/X). */
static inline imee_u64 imee_ept_leaf(imee_u64 page_pa, imee_u64 perms)
{
	return (page_pa & IMEE_EPT_ADDR_MASK) | (perms & IMEE_EPT_RWX) |
	       IMEE_EPT_MT_WB | IMEE_EPT_IPAT;
}

/* Index of @gfn in a table of @level (1 = page table ... 4 = PML4). */
static inline unsigned int imee_ept_index(imee_u64 gfn, int level)
{
	return (gfn >> (9 * (level - 1))) & (IMEE_EPT_ENTRIES - 1);
}

/* What a GPA of the ImEE is */
enum imee_region {
	IMEE_REGION_NONE,	/* neither the shell's nor the target's */
	IMEE_REGION_LOCAL,	/* a shell memslot: the agent's own pages */
	IMEE_REGION_AGENT,	/* agent_gpa: the agent page in target space */
	IMEE_REGION_TARGET,	/* a target memslot */
};

/* What to do about an EPT violation */
enum imee_action {
	IMEE_MAP_LOCAL,		/* map the shell page read-write-execute */
	IMEE_MAP_AGENT,		/* map the agent page execute-only */
	IMEE_MAP_TARGET,	/* map the target page read-only */
	IMEE_STOP_BLIND_SPOT,	/* data access to the agent's page */
	IMEE_STOP_NEEDS_A_BIT,	/* the walk would write an A/D bit */
	IMEE_STOP_FORBIDDEN,	/* write to or execution of target memory */
	IMEE_STOP_NO_GPA,	/* not memory of the shell or the target */
};

/*
 * The security rules of the ImEE in one place: target memory is only ever
 * read; the only target GPA that executes is agent_gpa, and it executes
 * the agent, never the target's page.
 */
static inline enum imee_action imee_classify(enum imee_region region,
					     imee_u64 qual)
{
	switch (region) {
	case IMEE_REGION_LOCAL:
		return IMEE_MAP_LOCAL;
	case IMEE_REGION_AGENT:
		if (qual & (IMEE_QUAL_READ | IMEE_QUAL_WRITE))
			return IMEE_STOP_BLIND_SPOT;
		return IMEE_MAP_AGENT;
	case IMEE_REGION_TARGET:
		if (qual & IMEE_QUAL_FETCH)
			return IMEE_STOP_FORBIDDEN;
		if (qual & IMEE_QUAL_WRITE) {
			/* hardware setting an A/D bit during a walk */
			if ((qual & IMEE_QUAL_GLA_VALID) &&
			    !(qual & IMEE_QUAL_TRANSLATED))
				return IMEE_STOP_NEEDS_A_BIT;
			return IMEE_STOP_FORBIDDEN;
		}
		return IMEE_MAP_TARGET;
	case IMEE_REGION_NONE:
	default:
		return IMEE_STOP_NO_GPA;
	}
}

#endif /* IMEE_EPT_LOGIC_H */
