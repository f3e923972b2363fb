/* SPDX-License-Identifier: GPL-2.0 */
/*
 * ImEE: what differs between the kernels ImEE builds for (Linux 6.1 and
 * 6.12 LTS, Debian 12), in one place.  imee_main.c and ept.c call the
 * names below and have no #if of their own; the hooks are per series
 * (kernel/patches/<x.y>/).  Unchanged between 6.1 and 6.12, checked by
 * compiling for both: account_locked_vm(), pin_user_pages_fast(),
 * kvm_for_each_memslot(), gfn_to_memslot(), kvm_make_vcpus_request_mask(),
 * file_is_kvm(), vcpu->wants_to_run (Debian's 6.1 has it), regs_avail.
 */
#ifndef IMEE_COMPAT_H
#define IMEE_COMPAT_H

#include <linux/file.h>
#include <linux/kvm_host.h>
#include <linux/mm.h>
#include <linux/version.h>

/*
 * The one place that reads LINUX_VERSION_CODE (checkpatch warns here: an
 * out-of-tree compatibility header cannot be "for the version to which it
 * is merged").
 */
#define IMEE_LINUX_AT_LEAST(major, minor) \
	(KERNEL_VERSION(major, minor, 0) <= LINUX_VERSION_CODE)

/* 6.5 dropped the vmas argument of get_user_pages_remote(). */
static inline long imee_gup_remote_one(struct mm_struct *mm, unsigned long addr,
				       unsigned int gup_flags,
				       struct page **page)
{
#if IMEE_LINUX_AT_LEAST(6, 5)
	return get_user_pages_remote(mm, addr, 1, gup_flags, page, NULL);
#else
	return get_user_pages_remote(mm, addr, 1, gup_flags, page, NULL, NULL);
#endif
}

/*
 * Did a KVM MMU-notifier invalidation of @gfn (backed by VMM address @hva)
 * run or start since @mmu_seq was sampled?  Under the VM's mmu_lock.  6.8
 * moved the tracked range from host addresses to GFNs
 * (mmu_invalidate_retry_hva -> mmu_invalidate_retry_gfn).
 */
static inline bool imee_invalidate_retry(struct kvm *kvm, unsigned long mmu_seq,
					 gfn_t gfn, unsigned long hva)
{
#if IMEE_LINUX_AT_LEAST(6, 8)
	return mmu_invalidate_retry_gfn(kvm, mmu_seq, gfn);
#else
	return mmu_invalidate_retry_hva(kvm, mmu_seq, hva);
#endif
}

/*
 * guest_memfd memslots (6.8+, KVM_MEM_GUEST_MEMFD): their private pages
 * have no VMM mapping and no MMU-notifier invalidation, so ImEE refuses
 * them (EOPNOTSUPP, kernel/API.md).
 */
static inline bool imee_slot_guest_memfd(const struct kvm_memory_slot *slot)
{
#ifdef KVM_MEM_GUEST_MEMFD
	return slot->flags & KVM_MEM_GUEST_MEMFD;
#else
	return false;
#endif
}

/* 6.12: struct fd is one word, read through fd_file(). */
#if !IMEE_LINUX_AT_LEAST(6, 12) && !defined(fd_file)
#define fd_file(f) ((f).file)
#endif

/* 6.12: kvm_x86_call(op) names the static call of kvm_x86_ops.op. */
#if !IMEE_LINUX_AT_LEAST(6, 12) && !defined(kvm_x86_call)
#define kvm_x86_call(func) static_call(kvm_x86_##func)
#endif

#endif /* IMEE_COMPAT_H */
