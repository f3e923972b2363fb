/* SPDX-License-Identifier: GPL-2.0 */
/*
 * ImEE: the hooks KVM calls.  Everything else of ImEE stays in imee/.
 *
 * Target side (kvm_main.c): ioctl dispatch and the events before which a
 * host page may stop being the target's (MMU notifier range_start and
 * release, the invalidation phase of a memslot delete/move).  Shell side
 * (vmx.c, svm.c): the ImEE vCPU's TDP pointer (EPTP, nested CR3), exception
 * intercepts and exits, and the guest CR3 cached at every exit while an
 * ImEE exists.  Each hook costs one atomic_read while no ImEE exists.
 */
#ifndef __LINUX_KVM_IMEE_H
#define __LINUX_KVM_IMEE_H

#include <linux/atomic.h>
#include <linux/fs.h>
#include <linux/imee.h>
#include <linux/limits.h>
#include <linux/types.h>

struct kvm;
struct kvm_vcpu;

extern atomic_t kvm_imee_count;	/* live ImEEs */

static inline bool kvm_imee_active(void)
{
	return unlikely(atomic_read(&kvm_imee_count));
}

/* kvm_dev_ioctl(): system ioctls on /dev/kvm (IMEE_LAUNCH, IMEE_QUERY). */
long kvm_imee_dev_ioctl(struct file *filp, unsigned int ioctl,
			unsigned long arg);

/*
 * The target's host mappings of [start, end) are going away (MMU notifier
 * invalidate_range_start, after KVM raised mmu_invalidate_in_progress).
 */
void __kvm_imee_invalidate_hva(struct kvm *kvm, unsigned long start,
			       unsigned long end);
/*
 * GFNs [start, end) of the target stop being what they were: a memslot is
 * being deleted or moved (its INVALID copy is active and SRCU synchronized,
 * the old slot's pages are still the VMM's).  mm_gone: the VMM's mm exits
 * (notifier release), everything goes for good.
 */
void __kvm_imee_invalidate_gfn(struct kvm *kvm, u64 start, u64 end,
			       bool mm_gone);

static inline void kvm_imee_invalidate_hva(struct kvm *kvm,
					   unsigned long start,
					   unsigned long end)
{
	if (kvm_imee_active())
		__kvm_imee_invalidate_hva(kvm, start, end);
}

static inline void kvm_imee_invalidate_memslot(struct kvm *kvm, u64 base_gfn,
					       u64 npages)
{
	if (kvm_imee_active())
		__kvm_imee_invalidate_gfn(kvm, base_gfn, base_gfn + npages,
					  false);
}

static inline void kvm_imee_release(struct kvm *kvm)
{
	if (kvm_imee_active())
		__kvm_imee_invalidate_gfn(kvm, 0, U64_MAX, true);
}

/* Shell side: is @kvm the shell VM of an ImEE? */
bool __kvm_imee_is_shell(struct kvm *kvm);

static inline bool kvm_imee_is_shell(struct kvm *kvm)
{
	return kvm_imee_active() && __kvm_imee_is_shell(kvm);
}

/*
 * The TDP pointer a shell's vCPU loads instead of KVM's @kvm_pointer: the
 * ImEE's own table, as an EPTP (A/D flags off) or a nested CR3.
 */
u64 kvm_imee_tdp_pointer(struct kvm_vcpu *vcpu, u64 kvm_pointer);

/*
 * Exits of a shell's vCPU.  Return 1 to resume the guest, 0 to end the
 * activation (the fault is recorded), < 0 for an error.
 */
int kvm_imee_exception(struct kvm_vcpu *vcpu, u32 vector, bool has_error,
		       u32 error_code, u64 cr2);
int kvm_imee_unexpected_exit(struct kvm_vcpu *vcpu, u32 reason, u64 gpa);

/* Intel (imee/intel.c) */
int kvm_imee_ept_violation(struct kvm_vcpu *vcpu, u64 gpa, u64 qual,
			   u64 gla);
/* vmx_vcpu_run(), every exit while an ImEE exists: counts by reason. */
void kvm_imee_vmx_exit(struct kvm_vcpu *vcpu, u32 basic_reason);

/* AMD (imee/amd.c) */
int kvm_imee_npf(struct kvm_vcpu *vcpu, u64 gpa, u64 error_code);
int kvm_imee_svm_exception(struct kvm_vcpu *vcpu, u32 vector, u64 info1,
			   u64 info2);
/* svm_vcpu_run(), every exit while an ImEE exists: counts by reason. */
void kvm_imee_svm_exit(struct kvm_vcpu *vcpu, u32 exit_code);

#endif /* __LINUX_KVM_IMEE_H */
