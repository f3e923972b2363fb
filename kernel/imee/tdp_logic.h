/* SPDX-License-Identifier: GPL-2.0 */
/*
 * ImEE: the pure parts of the ImEE's two-dimensional page table (TDP: Intel
 * EPT or AMD NPT) -- entry encodings, how a vendor's fault information
 * becomes an access, and how an access of the ImEE vCPU is classified.  No
 * kernel dependencies beyond fixed-width integers, so tests/unit builds this
 * header in user space and checks it against the Intel SDM's and the AMD
 * APM's bit definitions.
 *
 * The kernel includes it after <linux/types.h>; user space after <stdint.h>
 * with IMEE_TDP_USER defined.
 */
#ifndef IMEE_TDP_LOGIC_H
#define IMEE_TDP_LOGIC_H

#ifdef IMEE_TDP_USER
#include <stdint.h>
typedef uint64_t imee_u64;
#else
typedef u64 imee_u64;
#endif

/* Permissions of a leaf, whatever the format */
#define IMEE_PERM_R		(1U << 0)
#define IMEE_PERM_W		(1U << 1)
#define IMEE_PERM_X		(1U << 2)
#define IMEE_PERM_RWX		(IMEE_PERM_R | IMEE_PERM_W | IMEE_PERM_X)

#define IMEE_TDP_ADDR_MASK	0x000ffffffffff000ULL
#define IMEE_TDP_LEVELS		4
#define IMEE_TDP_ENTRIES	512
#define IMEE_TDP_MAX_GFN	((1ULL << (48 - 12)) - 1)	/* 4 levels */

enum imee_tdp_format {
	IMEE_TDP_EPT,		/* Intel EPT (SDM vol. 3C, 29.3.2) */
	IMEE_TDP_NPT,		/* AMD nested paging (APM vol. 2, 15.25.5) */
};

/* EPT entry bits; R/W/X are IMEE_PERM_R/W/X */
#define IMEE_EPT_MT_WB		(6ULL << 3)	/* leaf: memory type write-back */
#define IMEE_EPT_IPAT		(1ULL << 6)	/* leaf: ignore guest PAT */

/* EPTP (SDM 25.6.11): WB paging structures, 4 levels, A/D flags OFF */
#define IMEE_EPTP_MT_WB		6ULL
#define IMEE_EPTP_LEVELS_4	(3ULL << 3)
#define IMEE_EPTP_AD		(1ULL << 6)	/* never set by ImEE */

/*
 * NPT entry bits: a long-mode page table entry.  Every access through NPT
 * is a user access (APM 15.25.5), so every entry has U; there is no
 * execute-only entry: a leaf that executes is readable.
 */
#define IMEE_NPT_P		(1ULL << 0)
#define IMEE_NPT_RW		(1ULL << 1)
#define IMEE_NPT_US		(1ULL << 2)
#define IMEE_NPT_NX		(1ULL << 63)

/* EPT violation exit qualification (SDM 28.2.1, table 28-7) */
#define IMEE_QUAL_READ		(1ULL << 0)
#define IMEE_QUAL_WRITE		(1ULL << 1)
#define IMEE_QUAL_FETCH		(1ULL << 2)
#define IMEE_QUAL_GLA_VALID	(1ULL << 7)
#define IMEE_QUAL_TRANSLATED	(1ULL << 8) /* 0: a paging-structure access */

/* #NPF error code, EXITINFO1 (APM 15.25.6) */
#define IMEE_NPF_WRITE		(1ULL << 1)
#define IMEE_NPF_FETCH		(1ULL << 4)
#define IMEE_NPF_FINAL		(1ULL << 32) /* the access's own GPA */
#define IMEE_NPF_WALK		(1ULL << 33) /* a guest page-table access */

/* An access of the ImEE vCPU that its TDP did not allow */
#define IMEE_ACCESS_READ	(1U << 0)
#define IMEE_ACCESS_WRITE	(1U << 1)
#define IMEE_ACCESS_FETCH	(1U << 2)
#define IMEE_ACCESS_WALK	(1U << 3) /* by the CPU's guest page walk */

static inline imee_u64 imee_eptp(imee_u64 root_pa)
{
	return (root_pa & IMEE_TDP_ADDR_MASK) | IMEE_EPTP_MT_WB |
	       IMEE_EPTP_LEVELS_4;
}

/* A non-leaf entry: every permission, the leaf decides. */
static inline imee_u64 imee_tdp_table_entry(enum imee_tdp_format f,
					    imee_u64 table_pa)
{
	table_pa &= IMEE_TDP_ADDR_MASK;
	if (f == IMEE_TDP_NPT)
		return table_pa | IMEE_NPT_P | IMEE_NPT_RW | IMEE_NPT_US;
	return table_pa | IMEE_PERM_RWX;
}

/*
 * A 4 KiB leaf with permissions @perms (IMEE_PERM_*).  NPT cannot express
 * execute-only: IMEE_PERM_X alone gives a readable leaf there.
 */
static inline imee_u64 imee_tdp_leaf(enum imee_tdp_format f,
				     imee_u64 page_pa, unsigned int perms)
{
	imee_u64 e = page_pa & IMEE_TDP_ADDR_MASK;

	if (f == IMEE_TDP_NPT)
		return e | IMEE_NPT_P | IMEE_NPT_US |
		       (perms & IMEE_PERM_W ? IMEE_NPT_RW : 0) |
		       (perms & IMEE_PERM_X ? 0 : IMEE_NPT_NX);
	return e | (perms & IMEE_PERM_RWX) | IMEE_EPT_MT_WB | IMEE_EPT_IPAT;
}

static inline int imee_tdp_present(enum imee_tdp_format f, imee_u64 entry)
{
	if (f == IMEE_TDP_NPT)
		return !!(entry & IMEE_NPT_P);
	return !!(entry & IMEE_PERM_RWX);
}

/* Index of @gfn in a table of @level (1 = page table ... 4 = PML4). */
static inline unsigned int imee_tdp_index(imee_u64 gfn, int level)
{
	return (gfn >> (9 * (level - 1))) & (IMEE_TDP_ENTRIES - 1);
}

/* An EPT violation's exit qualification as an access */
static inline unsigned int imee_ept_access(imee_u64 qual)
{
	unsigned int a = qual & (IMEE_QUAL_READ | IMEE_QUAL_WRITE |
				 IMEE_QUAL_FETCH);

	if ((qual & IMEE_QUAL_GLA_VALID) && !(qual & IMEE_QUAL_TRANSLATED))
		a |= IMEE_ACCESS_WALK;
	return a;
}

/* A #NPF error code as an access (a read is neither write nor fetch) */
static inline unsigned int imee_npf_access(imee_u64 error_code)
{
	unsigned int a = IMEE_ACCESS_READ;

	if (error_code & IMEE_NPF_WRITE)
		a = IMEE_ACCESS_WRITE;
	else if (error_code & IMEE_NPF_FETCH)
		a = IMEE_ACCESS_FETCH;
	if (error_code & IMEE_NPF_WALK)
		a |= IMEE_ACCESS_WALK;
	return a;
}

/* What a GPA of the ImEE is */
enum imee_region {
	IMEE_REGION_NONE,	/* neither the shell's nor the target's */
	IMEE_REGION_LOCAL,	/* a shell memslot: the agent's own pages */
	IMEE_REGION_AGENT,	/* agent_gpa: the agent page in target space */
	IMEE_REGION_TARGET,	/* a target memslot */
};

/* What to do about an access the TDP did not allow */
enum imee_action {
	IMEE_MAP_LOCAL,		/* map the shell page read-write-execute */
	IMEE_MAP_AGENT,		/* map the agent page to execute (only) */
	IMEE_MAP_TARGET,	/* map the target page read-only */
	IMEE_MAP_WALK_COPY,	/* map a private copy of it, writable (NPT walks) */
	IMEE_STOP_BLIND_SPOT,	/* data access to the agent's page */
	IMEE_STOP_NEEDS_A_BIT,	/* the walk would write an A/D bit */
	IMEE_STOP_FORBIDDEN,	/* write to or execution of target memory */
	IMEE_STOP_NO_GPA,	/* not memory of the shell or the target */
};

/*
 * The security rules of the ImEE in one place: target memory is only ever
 * read; the only target GPA that executes is agent_gpa, and it executes
 * the agent, never the target's page.  @exec_only: the format has
 * execute-only leaves (EPT), so a read of agent_gpa stops as the blind
 * spot; without them (NPT) the agent's page is mapped readable and user
 * space finds such reads by their bytes (kernel/API.md).  @walk_copies:
 * the CPU's guest page walk writes every paging-structure entry it reads
 * (AMD, nested walks: kernel/README.md), so a walk's write is served by a
 * private copy of the target page rather than stopped; the target itself is
 * still never written.
 */
static inline enum imee_action imee_classify(enum imee_region region,
					     unsigned int access,
					     int exec_only, int walk_copies)
{
	switch (region) {
	case IMEE_REGION_LOCAL:
		return IMEE_MAP_LOCAL;
	case IMEE_REGION_AGENT:
		if ((access & IMEE_ACCESS_WRITE) ||
		    (exec_only && (access & IMEE_ACCESS_READ)))
			return IMEE_STOP_BLIND_SPOT;
		return IMEE_MAP_AGENT;
	case IMEE_REGION_TARGET:
		if (access & IMEE_ACCESS_FETCH)
			return IMEE_STOP_FORBIDDEN;
		if (access & IMEE_ACCESS_WRITE) {
			/* hardware setting an A/D bit during a walk */
			if (access & IMEE_ACCESS_WALK)
				return walk_copies ? IMEE_MAP_WALK_COPY :
						     IMEE_STOP_NEEDS_A_BIT;
			return IMEE_STOP_FORBIDDEN;
		}
		return IMEE_MAP_TARGET;
	case IMEE_REGION_NONE:
	default:
		return IMEE_STOP_NO_GPA;
	}
}

#endif /* IMEE_TDP_LOGIC_H */
