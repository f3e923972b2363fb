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

/* Size of the agent code page copied at launch. */
#define IMEE_AGENT_SIZE		4096

/*
 * ioctl type: not KVMIO (0xAE), so that no present or future KVM ioctl on
 * /dev/kvm can collide with ours.  0xAF 00-1F is fsl_hypervisor; ImEE uses
 * 0x80-0x9F.
 */
#define IMEE_IO			0xAF

/* struct imee_launch.flags */
#define IMEE_LAUNCH_RETARGET	(1U << 0) /* move imee_fd to a new target */
#define IMEE_LAUNCH_VALID_FLAGS	IMEE_LAUNCH_RETARGET

struct imee_launch {
	__u32 version;		/* in: IMEE_VERSION */
	__u32 flags;		/* in: IMEE_LAUNCH_* */
	__s32 vm_fd;		/* in: target KVM VM fd */
	__u32 vcpu_index;	/* in: target vCPU whose CR3/paging mode to use */
	__u64 agent_page;	/* in: user address of IMEE_AGENT_SIZE bytes */
	__s32 imee_fd;		/* in: with IMEE_LAUNCH_RETARGET, else 0 */
	__u32 pad;		/* must be 0 */
	__u64 reserved[4];	/* must be 0 */
};

/* struct imee_activate.mode */
#define IMEE_MODE_BATCH		1 /* run the request queue, then return */
#define IMEE_MODE_POLL		2 /* stay in guest mode serving the data page */

/* struct imee_activate.status: why the activation ended */
#define IMEE_STATUS_NONE	0 /* not run */
#define IMEE_STATUS_DONE	1 /* agent finished the batch / poll stopped */
#define IMEE_STATUS_FAULT	2 /* fault; fault_kind and fault_addr say more */
#define IMEE_STATUS_TARGET_GONE	3 /* the target VM is being destroyed */
#define IMEE_STATUS_INTERRUPTED	4 /* signal pending; activate again */

/* struct imee_activate.fault_kind, with IMEE_STATUS_FAULT */
#define IMEE_FAULT_NONE		0
#define IMEE_FAULT_UNMAPPED_VA	1 /* target page tables do not map the VA */
#define IMEE_FAULT_BLIND_SPOT	2 /* VA resolves to the agent's GPA */
#define IMEE_FAULT_NEEDS_A_BIT	3 /* walk would set an Accessed bit */
#define IMEE_FAULT_NO_GPA	4 /* GPA not backed by a target memslot */
#define IMEE_FAULT_EXCEPTION	5 /* other exception; vector in fault_info */

struct imee_activate {
	__u32 version;		/* in: IMEE_VERSION */
	__u32 mode;		/* in: IMEE_MODE_* */
	__u32 flags;		/* in: none defined, must be 0 */
	__u32 status;		/* out: IMEE_STATUS_* */
	__u32 fault_kind;	/* out: IMEE_FAULT_* */
	__u32 fault_info;	/* out: e.g. exception vector */
	__u64 fault_addr;	/* out: faulting VA (or GPA for NO_GPA) */
	__u64 reserved[4];	/* in: must be 0; out: zeroed */
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
