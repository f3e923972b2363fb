/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * ImEE: immersive execution environment for out-of-VM introspection of a
 * running KVM guest (see kernel/README.md of the ImEE project).
 *
 * Two ioctls:
 *
 *  IMEE_LAUNCH   on /dev/kvm (system fd).  The caller names the target VM by
 *                an open KVM VM fd (holding that fd is the capability; a tool
 *                gets it from the VMM with pidfd_getfd(2)).  Returns a new
 *                ImEE fd (O_CLOEXEC) on success.
 *  IMEE_ACTIVATE on an ImEE fd.  Runs the agent in batch or poll mode and
 *                reports why it stopped.
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
 * Launch turns it into an ImEE: from then on its vCPU runs on an EPT built
 * by ImEE, not by KVM, in which
 *  - every GPA of the target's memslots maps to the target's page,
 *    read-only and no-execute;
 *  - agent_gpa (a target GPA) maps to the shell page at agent_local_gpa,
 *    execute-only: the agent runs there in the target's address space,
 *    and a data access to it (a "blind spot") faults;
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
	__u32 vcpu_index;	/* in: target vCPU whose CR3/paging mode to use */
	__s32 shell_fd;		/* in: the caller's KVM VM fd (see above), or -1 */
	__s32 imee_fd;		/* in: with IMEE_LAUNCH_RETARGET, else -1 */
	__u64 agent_gpa;	/* in: target GPA of the agent's home page */
	__u64 agent_local_gpa;	/* in: shell GPA of the agent page */
	__u64 reserved[3];	/* must be 0 */
};

/* struct imee_activate.mode: what the agent was told to do (informational) */
#define IMEE_ACTIVATE_BATCH	1 /* run the request queue, then halt */
#define IMEE_ACTIVATE_POLL	2 /* stay in guest mode serving the data page */

/* struct imee_activate.status: why the activation ended */
#define IMEE_RESULT_NONE	0 /* not run */
#define IMEE_RESULT_DONE	1 /* the agent halted */
#define IMEE_RESULT_FAULT	2 /* fault; fault_kind and fault_addr say more */
#define IMEE_RESULT_TARGET_GONE	3 /* the target's memory is gone (VMM exited) */
#define IMEE_RESULT_INTERRUPTED	4 /* signal pending; activate again */

/*
 * struct imee_activate.fault_kind, with IMEE_RESULT_FAULT.  The vCPU stops
 * at the faulting instruction: the caller restarts the agent (KVM_SET_REGS
 * on the shell's vCPU) before the next activation.
 */
#define IMEE_FAULT_NONE		0
#define IMEE_FAULT_EXCEPTION	1 /* fault_info: vector | error code << 16;
				   * #PF: fault_addr = CR2 */
#define IMEE_FAULT_BLIND_SPOT	2 /* data access to agent_gpa; fault_gva = VA */
#define IMEE_FAULT_NEEDS_A_BIT	3 /* the walk must set an A/D bit at fault_addr */
#define IMEE_FAULT_NO_GPA	4 /* fault_addr (GPA) is not target RAM */
#define IMEE_FAULT_FORBIDDEN	5 /* write to / execute of target memory */
#define IMEE_FAULT_EXIT		6 /* unexpected VM exit; fault_info = reason */

/* struct imee_activate.target_paging */
#define IMEE_PAGING_LA57	(1U << 0) /* CR4.LA57: 5-level paging */
#define IMEE_PAGING_NXE		(1U << 1) /* EFER.NXE */
#define IMEE_PAGING_WP		(1U << 2) /* CR0.WP */
#define IMEE_PAGING_PCIDE	(1U << 3) /* CR4.PCIDE: CR3 bits 11:0 = PCID */
#define IMEE_PAGING_LONG	(1U << 4) /* EFER.LMA: long mode */
#define IMEE_PAGING_STALE	(1U << 31) /* the vCPU did not exit in time:
					    * target_cr3 is from its last exit */

struct imee_activate {
	__u32 version;		/* in: IMEE_VERSION */
	__u32 mode;		/* in: IMEE_ACTIVATE_* */
	__u32 flags;		/* in: none defined, must be 0 */
	__u32 status;		/* out: IMEE_RESULT_* */
	__u32 fault_kind;	/* out: IMEE_FAULT_* */
	__u32 fault_info;	/* out: see IMEE_FAULT_* */
	__u64 fault_addr;	/* out: GPA (EPT faults) or CR2 (#PF) */
	__u64 fault_gva;	/* out: guest linear address of an EPT fault, or 0 */
	__u64 target_cr3;	/* out: target vCPU's CR3 when the run began */
	__u32 target_paging;	/* out: IMEE_PAGING_* of the target vCPU */
	__u32 pad;		/* out: 0 */
	__u64 exits;		/* out: VM exits of the ImEE vCPU in this run */
};

#define IMEE_LAUNCH	_IOW(IMEE_IO, 0x80, struct imee_launch)
#define IMEE_ACTIVATE	_IOWR(IMEE_IO, 0x81, struct imee_activate)

/*
 * The layout is ABI: sizes are fixed on every architecture.  Checked by
 * C11 and C++11 compilers (the kernel builds with -std=gnu11).
 */
#if defined(__cplusplus) && __cplusplus >= 201103L
static_assert(sizeof(struct imee_launch) == 64, "ImEE ABI");
static_assert(sizeof(struct imee_activate) == 64, "ImEE ABI");
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
_Static_assert(sizeof(struct imee_launch) == 64, "ImEE ABI");
_Static_assert(sizeof(struct imee_activate) == 64, "ImEE ABI");
#endif

#endif /* _UAPI_LINUX_IMEE_H */
