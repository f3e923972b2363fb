/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * ImEE: immersive execution environment for out-of-VM introspection of a
 * running KVM guest (see kernel/README.md of the ImEE project).
 *
 * Four ioctls (kernel/API.md documents each, with every error):
 *
 *  IMEE_QUERY     on /dev/kvm (system fd).  ABI version and feature bits:
 *                 how user space detects an ImEE kernel.
 *  IMEE_LAUNCH    on /dev/kvm.  The caller names the target VM by an open
 *                 KVM VM fd (holding that fd is the capability; a tool gets
 *                 it from the VMM with pidfd_getfd(2)).  Returns a new ImEE
 *                 fd (O_CLOEXEC) on success.
 *  IMEE_ACTIVATE  on an ImEE fd.  Runs the agent in batch or poll mode and
 *                 reports why it stopped.
 *  IMEE_GET_STATS on an ImEE fd.  Counters since launch.
 *
 * ABI rules: every struct starts with a version field, has explicit padding
 * and reserved fields that must be zero, and has a fixed size that is the
 * same for 32- and 64-bit user space (user pointers travel as __u64).  New
 * fields are only added in reserved space, guarded by a new flag or a new
 * version.  Draft: unstable until the first ImEE kernel release.
 */
#ifndef _UAPI_LINUX_IMEE_H
#define _UAPI_LINUX_IMEE_H

#include <linux/types.h>
#include <linux/ioctl.h>

#define IMEE_VERSION		1

/*
 * ioctl type: not KVMIO (0xAE), so that no present or future KVM ioctl on
 * /dev/kvm can collide with ours.  0xAF 00-1F is fsl_hypervisor; ImEE uses
 * 0x80-0x9F.
 */
#define IMEE_IO			0xAF

/* struct imee_launch.flags */
#define IMEE_LAUNCH_RETARGET	(1U << 0) /* move imee_fd to a new target */
#define IMEE_LAUNCH_VALID_FLAGS	IMEE_LAUNCH_RETARGET

/*
 * The ImEE runs in a "shell": a KVM VM the caller created with KVM_CREATE_VM
 * and one KVM_CREATE_VCPU that has never run, whose memslots hold the
 * agent's local pages (agent code page, data pages, local page tables).
 * Launch turns it into an ImEE: from then on its vCPU runs on a
 * two-dimensional page table (EPT on Intel, NPT on AMD; "EPT" below means
 * either) built by ImEE, not by KVM, in which
 *  - every GPA of the target's memslots maps to the target's page,
 *    read-only and no-execute;
 *  - agent_gpa (a target GPA) maps to the shell page at agent_local_gpa,
 *    execute-only: the agent runs there in the target's address space,
 *    and a data access to it (a "blind spot") faults.  NPT has no
 *    execute-only entries: with IMEE_FEATURE_AGENT_READABLE the page is
 *    readable too, and a read of agent_gpa returns the agent's bytes
 *    instead of faulting (the caller recognises them, e.g. by a canary);
 *  - the shell's own memslots map to its pages (pinned), read-write-execute;
 *  - nothing else is mapped.
 * With IMEE_LAUNCH_RETARGET, imee_fd is moved to vm_fd/vcpu_index and the
 * new agent_gpa/agent_local_gpa (same target: the agent relocates); shell_fd
 * must be -1.  The EPT is emptied, nothing is reallocated.
 */
struct imee_launch {
	__u32 version;		/* in: IMEE_VERSION */
	__u32 flags;		/* in: IMEE_LAUNCH_* */
	__s32 vm_fd;		/* in: target KVM VM fd */
	__u32 vcpu_index;	/* in: target vCPU (IMEE_ACTIVATE_READ_TARGET_CR3) */
	__s32 shell_fd;		/* in: the caller's KVM VM fd (see above), or -1 */
	__s32 imee_fd;		/* in: with IMEE_LAUNCH_RETARGET, else -1 */
	__u64 agent_gpa;	/* in: target GPA of the agent's home page */
	__u64 agent_local_gpa;	/* in: shell GPA of the agent page */
	__u64 reserved[3];	/* must be 0 */
};

/* struct imee_activate.mode: what the agent was told to do (informational) */
#define IMEE_ACTIVATE_BATCH	1 /* run the request queue, then halt */
#define IMEE_ACTIVATE_POLL	2 /* stay in guest mode serving the data page */

/*
 * struct imee_activate.flags (a bit set, unlike .mode).  Without
 * IMEE_ACTIVATE_READ_TARGET_CR3 an activation does not touch the target at
 * all: target_cr3 and target_paging are 0, the agent uses the CR3 that the
 * caller put in each request.  With it, the target vCPU's CR3 and paging
 * mode are read when the activation begins; a target vCPU in guest mode is
 * kicked for it (one VM exit of the target) and waited for up to 100 ms.
 */
#define IMEE_ACTIVATE_READ_TARGET_CR3	(1U << 0)
#define IMEE_ACTIVATE_VALID_FLAGS	IMEE_ACTIVATE_READ_TARGET_CR3

/* struct imee_activate.status: why the activation ended */
#define IMEE_RESULT_NONE	0 /* not run */
#define IMEE_RESULT_DONE	1 /* the agent halted */
#define IMEE_RESULT_FAULT	2 /* fault; fault_kind and fault_addr say more */
#define IMEE_RESULT_TARGET_GONE	3 /* the target's memory is gone (VMM exited) */
#define IMEE_RESULT_INTERRUPTED	4 /* signal pending; activate again */
#define IMEE_RESULT_MAX		4

/*
 * struct imee_activate.fault_kind, with IMEE_RESULT_FAULT.  The vCPU stops
 * at the faulting instruction: the caller restarts the agent (KVM_SET_REGS
 * on the shell's vCPU) before the next activation.  fault_info, fault_addr
 * and fault_gva per kind (fields not listed are 0):
 *
 * IMEE_FAULT_EXCEPTION   fault_info bits 7:0 = vector, bit 8 = an error
 *                        code was delivered, bits 31:16 = error code bits
 *                        15:0; fault_addr = CR2 for #PF (vector 14).
 * IMEE_FAULT_BLIND_SPOT  data access to agent_gpa: fault_addr = GPA,
 *                        fault_gva = guest linear address (0 if unknown).
 * IMEE_FAULT_NEEDS_A_BIT the page walk must set an Accessed/Dirty bit in
 *                        the target paging structure at GPA fault_addr;
 *                        fault_gva = the linear address being translated.
 * IMEE_FAULT_NO_GPA      fault_addr (GPA) is not target RAM (or not
 *                        readable); fault_gva as above.
 * IMEE_FAULT_FORBIDDEN   write to / execution of target memory:
 *                        fault_addr = GPA, fault_gva as above, fault_info
 *                        = exit qualification bits 31:0 (SDM table 28-7;
 *                        AMD: #NPF error code bits 31:0, APM 15.25.6).
 * IMEE_FAULT_EXIT        a VM exit ImEE does not serve.  fault_info =
 *                        VMX basic exit reason (e.g. 49, EPT misconfig:
 *                        fault_addr = GPA; 48, EPT violations or #NPFs
 *                        repeating at GPA fault_addr; AMD exits as in
 *                        exit_reasons below), or IMEE_EXIT_KVM | KVM_EXIT_*
 *                        when KVM wanted to exit to user space (I/O, MMIO,
 *                        shutdown, ...).
 */
#define IMEE_FAULT_NONE		0
#define IMEE_FAULT_EXCEPTION	1
#define IMEE_FAULT_BLIND_SPOT	2
#define IMEE_FAULT_NEEDS_A_BIT	3
#define IMEE_FAULT_NO_GPA	4
#define IMEE_FAULT_FORBIDDEN	5
#define IMEE_FAULT_EXIT		6
#define IMEE_FAULT_MAX		6

#define IMEE_FAULT_INFO_VECTOR(info)	((info) & 0xffU)
#define IMEE_FAULT_INFO_HAS_ERROR	(1U << 8)
#define IMEE_FAULT_INFO_ERROR(info)	(((info) >> 16) & 0xffffU)
#define IMEE_EXIT_KVM			(1U << 31)

/* struct imee_activate.target_paging (IMEE_ACTIVATE_READ_TARGET_CR3) */
#define IMEE_PAGING_LA57	(1U << 0) /* CR4.LA57: 5-level paging */
#define IMEE_PAGING_NXE		(1U << 1) /* EFER.NXE */
#define IMEE_PAGING_WP		(1U << 2) /* CR0.WP */
#define IMEE_PAGING_PCIDE	(1U << 3) /* CR4.PCIDE: CR3 bits 11:0 = PCID */
#define IMEE_PAGING_LONG	(1U << 4) /* EFER.LMA: long mode */
/* The vCPU did not exit in time: target_cr3 is from its last exit. */
#define IMEE_PAGING_STALE	(1U << 31)

/*
 * In: version, mode, flags, reserved (0).  Everything else is out only
 * (ignored on input, so a result can be passed back as it is).  The exit
 * counts are of this activation; exits = exits_ept_violation +
 * exits_exception + exits_interrupt + exits_other.
 */
struct imee_activate {
	__u32 version;		/* in: IMEE_VERSION */
	__u32 mode;		/* in: IMEE_ACTIVATE_BATCH or _POLL */
	__u32 flags;		/* in: IMEE_ACTIVATE_READ_TARGET_CR3 or 0 */
	__u32 status;		/* out: IMEE_RESULT_* */
	__u32 fault_kind;	/* out: IMEE_FAULT_* */
	__u32 fault_info;	/* out: see IMEE_FAULT_* */
	__u64 fault_addr;	/* out: GPA (EPT faults) or CR2 (#PF) */
	__u64 fault_gva;	/* out: guest linear address of an EPT fault, or 0 */
	__u64 target_cr3;	/* out: target vCPU's CR3 (flag), else 0 */
	__u32 target_paging;	/* out: IMEE_PAGING_* (flag), else 0 */
	__u32 pad;		/* out: 0 */
	__u64 exits;		/* out: VM exits of the ImEE vCPU in this run */
	__u64 exits_ept_violation; /* out: ... of them EPT violations (#NPF) */
	__u64 exits_exception;	/* out: exceptions (all intercepted; not NMI) */
	__u64 exits_interrupt;	/* out: external interrupts (host IRQs) */
	__u64 exits_other;	/* out: any other reason */
	/*
	 * out, IMEE_FEATURE_WALK_COPIES, batch mode: target paging-structure
	 * pages this activation's walks used as private copies, and how many
	 * of those no longer equalled the target's page when it ended (then
	 * no read of the activation may be trusted: kernel/API.md).  Else 0.
	 */
	__u32 walk_copies;
	__u32 walk_copies_changed;
	__u64 reserved[3];	/* in: 0; out: 0 */
};

/*
 * VMX basic exit reasons 0 .. IMEE_EXIT_REASONS - 1 (SDM Vol. 3C,
 * Appendix C): an exit of a higher reason is counted in exits only.  On
 * AMD an SVM exit code counts as its VMX counterpart (e.g. #NPF as 48 EPT
 * violation, INTR as 1, PAUSE as 40, HLT as 12, an intercepted exception
 * or NMI as 0; kernel/API.md has the table), one without a counterpart as
 * IMEE_EXIT_REASON_SVM_OTHER, a number VMX does not use.
 */
#define IMEE_EXIT_REASONS	80
#define IMEE_EXIT_REASON_SVM_OTHER	35

/*
 * IMEE_GET_STATS on an ImEE fd: counters since IMEE_LAUNCH (a retarget
 * keeps them).  In: version, flags (0), reserved (0).  Exit and result
 * counters are added when an activation ends; the others are live.
 */
struct imee_stats {
	__u32 version;		/* in: IMEE_VERSION */
	__u32 flags;		/* in: 0 */
	__u64 activations;	/* IMEE_ACTIVATE runs of the vCPU */
	__u64 exits;		/* VM exits of the ImEE vCPU in them */
	__u64 exits_ept_violation;
	__u64 exits_exception;
	__u64 exits_interrupt;
	__u64 exits_other;
	__u64 results[8];	/* activations by IMEE_RESULT_* status */
	__u64 faults[8];	/* IMEE_RESULT_FAULT by IMEE_FAULT_* kind */
	__u64 fault_vectors[32]; /* IMEE_FAULT_EXCEPTION by vector */
	__u64 target_maps;	/* target pages mapped into the ImEE's EPT */
	__u64 local_maps;	/* shell pages mapped (incl. the agent page) */
	/* target pages taken, then not mapped: an invalidation ran meanwhile */
	__u64 map_retries;
	/* invalidations: MMU notifier, memslot, mm exit, retarget */
	__u64 invalidations;
	__u64 tlb_flushes;	/* TLB flush requests to the ImEE vCPU */
	__u64 pinned_pages;	/* shell pages pinned now (RLIMIT_MEMLOCK) */
	__u64 ept_pages;	/* EPT table pages now (root included) */
	__u64 reserved[2];	/* out: 0 */
	/* exits of the activations by VMX basic exit reason (index) */
	__u64 exit_reasons[IMEE_EXIT_REASONS];
};

/*
 * IMEE_QUERY on /dev/kvm: is this an ImEE kernel, and what can it do.
 * Any caller may ask (no version check).  A kernel without ImEE fails it
 * (EINVAL from KVM's arch ioctl, or ENOTTY); detect ImEE by a successful
 * call that returns magic == IMEE_MAGIC.
 */
#define IMEE_MAGIC		0x45456d49U /* "ImEE" in little-endian bytes */

/* struct imee_query.features */
#define IMEE_FEATURE_HOST		(1ULL << 0) /* this CPU can run ImEEs */
#define IMEE_FEATURE_RETARGET		(1ULL << 1) /* IMEE_LAUNCH_RETARGET */
#define IMEE_FEATURE_READ_TARGET_CR3	(1ULL << 2) /* the activate flag */
#define IMEE_FEATURE_STATS		(1ULL << 3) /* IMEE_GET_STATS */
#define IMEE_FEATURE_EXIT_COUNTS	(1ULL << 4) /* imee_activate.exits_* */
#define IMEE_FEATURE_MEMLOCK		(1ULL << 5) /* pins: RLIMIT_MEMLOCK */
#define IMEE_FEATURE_EXIT_REASONS	(1ULL << 6) /* imee_stats.exit_reasons */
/* which ImEE this KVM has (one of the two): Intel VMX + EPT, AMD SVM + NPT */
#define IMEE_FEATURE_VMX_EPT		(1ULL << 7)
#define IMEE_FEATURE_SVM_NPT		(1ULL << 8)
/* agent_gpa is readable in the ImEE: no IMEE_FAULT_BLIND_SPOT on reads */
#define IMEE_FEATURE_AGENT_READABLE	(1ULL << 9)
/*
 * The CPU's guest page walk writes the entries it reads (AMD nested
 * paging), so batch activations give walks private copies of the target's
 * paging-structure pages and check them when they end (walk_copies).
 */
#define IMEE_FEATURE_WALK_COPIES	(1ULL << 10)

struct imee_query {
	__u32 version;		/* out: the kernel's IMEE_VERSION (in: ignored) */
	__u32 magic;		/* out: IMEE_MAGIC */
	__u64 features;		/* out: IMEE_FEATURE_* */
	__u32 flags;		/* in: 0 */
	__u32 pad;		/* in: 0 */
	__u64 max_gpa;		/* out: GPAs an ImEE maps are below this */
	__u64 reserved[4];	/* in: 0; out: 0 */
};

#define IMEE_LAUNCH	_IOW(IMEE_IO, 0x80, struct imee_launch)	 /* /dev/kvm */
#define IMEE_ACTIVATE	_IOWR(IMEE_IO, 0x81, struct imee_activate) /* ImEE fd */
#define IMEE_GET_STATS	_IOWR(IMEE_IO, 0x82, struct imee_stats)	 /* ImEE fd */
#define IMEE_QUERY	_IOWR(IMEE_IO, 0x83, struct imee_query)	 /* /dev/kvm */

/*
 * The layout is ABI: sizes are fixed on every architecture.  Checked by
 * C11 and C++11 compilers (the kernel builds with -std=gnu11).
 */
#if defined(__cplusplus) && __cplusplus >= 201103L
static_assert(sizeof(struct imee_launch) == 64, "ImEE ABI");
static_assert(sizeof(struct imee_activate) == 128, "ImEE ABI");
static_assert(sizeof(struct imee_stats) == 1152, "ImEE ABI");
static_assert(sizeof(struct imee_query) == 64, "ImEE ABI");
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
_Static_assert(sizeof(struct imee_launch) == 64, "ImEE ABI");
_Static_assert(sizeof(struct imee_activate) == 128, "ImEE ABI");
_Static_assert(sizeof(struct imee_stats) == 1152, "ImEE ABI");
_Static_assert(sizeof(struct imee_query) == 64, "ImEE ABI");
#endif

#endif /* _UAPI_LINUX_IMEE_H */
