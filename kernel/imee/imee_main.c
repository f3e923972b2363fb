// SPDX-License-Identifier: GPL-2.0
/*
 * ImEE core: launch, activation, exits and invalidation of an immersive
 * execution environment on a target KVM VM (out-of-VM introspection at
 * native speed).  Linked into kvm.ko; KVM reaches it through the hooks in
 * <linux/kvm_imee.h>.
 *
 * An ImEE is a "shell" VM that user space created with stock ioctls (one
 * vCPU that never ran, memslots holding the agent's local pages) plus an
 * EPT that ImEE builds itself (ept.c) and loads into the shell's vCPU in
 * place of KVM's: target memory read-only and no-execute, the agent's page
 * execute-only at agent_gpa, the shell's pages pinned.  It is filled on EPT
 * violations, one page at a time, from the target's memslots and the
 * target VMM's page tables (get_user_pages_remote), and emptied whenever
 * KVM's MMU notifier or a memslot change says a host page may no longer be
 * the target's.  KVM runs the vCPU (kvm_arch_vcpu_ioctl_run); every
 * exception exits (exception bitmap all ones) and ends the activation with
 * a typed fault, as do EPT violations the rules of ept_logic.h refuse.
 */

#define pr_fmt(fmt) "kvm-imee: " fmt

#include <linux/anon_inodes.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/jiffies.h>
#include <linux/kvm_host.h>
#include <linux/kvm_imee.h>
#include <linux/mm.h>
#include <linux/moduleparam.h>
#include <linux/mutex.h>
#include <linux/rculist.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/sysfs.h>
#include <linux/uaccess.h>
#include <linux/xarray.h>
#include <asm/msr.h>
#include <asm/vmx.h>

#include "ept.h"

/* How long activation waits for a running target vCPU to exit. */
#define IMEE_KICK_TIMEOUT_MS	100

/* imee->fault.kind beyond the uapi kinds: the target's memory is gone */
#define IMEE_FAULT_TARGET_GONE	0x100

/* kvm.imee_trace=1: log every exit ImEE handles (debugging a CPU or emulator). */
static bool imee_trace;
module_param(imee_trace, bool, 0644);

atomic_t kvm_imee_count = ATOMIC_INIT(0);
EXPORT_SYMBOL_GPL(kvm_imee_count);

/*
 * Read-only counters for leak checks: kvm.imee_objects (ImEEs allocated and
 * not yet freed) and kvm.imee_pages (imee_held_pages).
 */
static atomic_long_t imee_objects = ATOMIC_LONG_INIT(0);

static int imee_get_counter(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%ld\n", atomic_long_read(kp->arg));
}

static const struct kernel_param_ops imee_counter_ops = {
	.get = imee_get_counter,
};
module_param_cb(imee_objects, &imee_counter_ops, &imee_objects, 0444);
module_param_cb(imee_pages, &imee_counter_ops, &imee_held_pages, 0444);

static LIST_HEAD(imee_list);		/* RCU; writers hold imee_list_lock */
static DEFINE_SPINLOCK(imee_list_lock);

struct imee_fault {
	u32 kind;
	u32 info;
	u64 addr;
	u64 gva;
};

struct imee {
	struct list_head node;
	struct kvm *shell;		/* reference held */
	struct kvm_vcpu *vcpu;		/* the shell's only vCPU */
	struct mutex lock;		/* one activation or retarget at a time */
	spinlock_t mmu_lock;		/* ept; target fields change under both */
	struct kvm *target;		/* reference held */
	u32 vcpu_index;
	u64 agent_gfn;
	u64 agent_local_gfn;
	bool target_gone;		/* the target's mm has exited */
	struct imee_ept ept;
	struct xarray pins;		/* shell gfn -> pinned page */
	struct task_struct *runner;	/* task in kvm_arch_vcpu_ioctl_run */
	struct imee_fault fault;	/* of the current activation */
	u64 last_gfn;			/* EPT violations in a row on it */
	unsigned int repeats;
	bool exceptions_intercepted;
};

/*
 * EPT violations in a row on one GFN before the activation is ended: a
 * mapping that does not satisfy the access (a CPU or emulator quirk) must
 * not loop forever.  Races with invalidations retry a few times at most.
 */
#define IMEE_MAX_REPEATS	1000

static bool imee_user_slot(const struct kvm_memory_slot *slot)
{
	return slot && slot->id < KVM_USER_MEM_SLOTS &&
	       !(slot->flags & KVM_MEMSLOT_INVALID);
}

/* ------------------------------------------------------------ lookup */

/* Under rcu_read_lock() or imee_list_lock. */
static struct imee *imee_of_shell(struct kvm *kvm)
{
	struct imee *imee;

	list_for_each_entry_rcu(imee, &imee_list, node,
				lockdep_is_held(&imee_list_lock))
		if (imee->shell == kvm)
			return imee;
	return NULL;
}

/* Under imee_list_lock: is @kvm the shell or target of an ImEE? */
static bool imee_involves(struct kvm *kvm)
{
	struct imee *imee;

	list_for_each_entry(imee, &imee_list, node)
		if (imee->shell == kvm || imee->target == kvm)
			return true;
	return false;
}

/*
 * Under imee_list_lock: @shell is already part of an ImEE, or @target is an
 * ImEE's shell (an ImEE of an ImEE is not supported).
 */
static bool __imee_busy(struct kvm *shell, struct kvm *target)
{
	return imee_involves(shell) || imee_of_shell(target);
}

static bool imee_busy(struct kvm *shell, struct kvm *target)
{
	bool busy;

	spin_lock(&imee_list_lock);
	busy = __imee_busy(shell, target);
	spin_unlock(&imee_list_lock);
	return busy;
}

bool __kvm_imee_is_shell(struct kvm *kvm)
{
	bool r;

	rcu_read_lock();
	r = imee_of_shell(kvm);
	rcu_read_unlock();
	return r;
}
EXPORT_SYMBOL_GPL(__kvm_imee_is_shell);

/*
 * The ImEE whose activation runs on this task, or NULL if the shell's vCPU
 * runs outside an activation (KVM_RUN on the shell's own vCPU fd): it gets
 * no new mappings and no faults.  A non-NULL result stays valid: the
 * activation holds the ImEE's file.
 */
static struct imee *imee_running(struct kvm_vcpu *vcpu)
{
	struct imee *imee;

	rcu_read_lock();
	imee = imee_of_shell(vcpu->kvm);
	if (imee && READ_ONCE(imee->runner) != current)
		imee = NULL;
	rcu_read_unlock();
	return imee;
}

/* ------------------------------------------------------------ exits */

u64 kvm_imee_eptp(struct kvm_vcpu *vcpu, u64 kvm_eptp)
{
	struct imee *imee;
	u64 eptp = kvm_eptp;

	rcu_read_lock();
	imee = imee_of_shell(vcpu->kvm);
	if (imee)
		eptp = imee_ept_pointer(&imee->ept);
	rcu_read_unlock();
	return eptp;
}
EXPORT_SYMBOL_GPL(kvm_imee_eptp);

/* End the activation with a fault; the vCPU stays where it stopped. */
static int imee_stop(struct imee *imee, u32 kind, u32 info, u64 addr, u64 gva)
{
	imee->fault.kind = kind;
	imee->fault.info = info;
	imee->fault.addr = addr;
	imee->fault.gva = gva;
	imee->vcpu->run->exit_reason = KVM_EXIT_INTERNAL_ERROR;
	return 0;
}

static void imee_map(struct imee *imee, u64 gfn, struct page *page, u64 perms)
{
	spin_lock(&imee->mmu_lock);
	imee_ept_map(&imee->ept, gfn, page_to_phys(page), perms);
	spin_unlock(&imee->mmu_lock);
}

/* Map @gfn to the shell's page @local_gfn, pinned for the ImEE's life. */
static int imee_map_local(struct imee *imee, u64 gfn, u64 local_gfn,
			  u64 perms)
{
	struct kvm_memory_slot *slot;
	struct page *page;
	int r;

	r = imee_ept_topup(&imee->ept);
	if (r)
		return r;
	page = xa_load(&imee->pins, local_gfn);
	if (!page) {
		/* the vCPU holds the shell's srcu; current->mm is the shell's */
		slot = kvm_vcpu_gfn_to_memslot(imee->vcpu, local_gfn);
		if (!imee_user_slot(slot) || (slot->flags & KVM_MEM_READONLY))
			return imee_stop(imee, IMEE_FAULT_NO_GPA, 0,
					 gfn_to_gpa(gfn), 0);
		if (pin_user_pages_fast(__gfn_to_hva_memslot(slot, local_gfn),
					1, FOLL_WRITE | FOLL_LONGTERM,
					&page) != 1)
			return imee_stop(imee, IMEE_FAULT_NO_GPA, 0,
					 gfn_to_gpa(gfn), 0);
		r = xa_err(xa_store(&imee->pins, local_gfn, page,
				    GFP_KERNEL_ACCOUNT));
		if (r) {
			unpin_user_page(page);
			return r;
		}
		atomic_long_inc(&imee_held_pages);
	}
	imee_map(imee, gfn, page, perms);
	return 1;
}

/*
 * Map target @gfn read-only.  The page is looked up as KVM's own fault path
 * does: memslot -> VMM address -> page, then installed only if no MMU
 * notifier invalidation of the target ran meanwhile (the invalidation hook
 * zaps after KVM has raised mmu_invalidate_in_progress, so any mapping
 * installed before is zapped, any later attempt retries).
 */
static int imee_map_target(struct imee *imee, u64 gfn, u64 gla)
{
	struct kvm *target = imee->target;
	struct mm_struct *mm = target->mm;
	struct kvm_memory_slot *slot;
	unsigned long mmu_seq, hva;
	struct page *page;
	int idx, r;
	long n;

	r = imee_ept_topup(&imee->ept);
	if (r)
		return r;
	idx = srcu_read_lock(&target->srcu);
	mmu_seq = target->mmu_invalidate_seq;
	/* pairs with the smp_wmb() in kvm_mmu_invalidate_end() */
	smp_rmb();
	slot = gfn_to_memslot(target, gfn);
	if (!imee_user_slot(slot)) {
		r = imee_stop(imee, IMEE_FAULT_NO_GPA, 0, gfn_to_gpa(gfn), gla);
		goto out;
	}
	hva = __gfn_to_hva_memslot(slot, gfn);
	if (READ_ONCE(imee->target_gone) || !mmget_not_zero(mm)) {
		r = imee_stop(imee, IMEE_FAULT_TARGET_GONE, 0, 0, 0);
		goto out;
	}
	mmap_read_lock(mm);
	n = get_user_pages_remote(mm, hva, 1, 0, &page, NULL, NULL);
	mmap_read_unlock(mm);
	mmput(mm);
	if (n != 1) {
		r = imee_stop(imee, IMEE_FAULT_NO_GPA, 0, gfn_to_gpa(gfn), gla);
		goto out;
	}
	read_lock(&target->mmu_lock);
	if (!mmu_invalidate_retry_hva(target, mmu_seq, hva))
		imee_map(imee, gfn, page, IMEE_EPT_R);
	read_unlock(&target->mmu_lock);
	put_page(page);
	r = 1;	/* mapped, or raced: the access faults again */
out:
	srcu_read_unlock(&target->srcu, idx);
	return r;
}

static enum imee_region imee_region_of(struct imee *imee, u64 gfn)
{
	struct kvm *target = imee->target;
	bool in_target;
	int idx;

	if (gfn == imee->agent_gfn)
		return IMEE_REGION_AGENT;
	if (imee_user_slot(kvm_vcpu_gfn_to_memslot(imee->vcpu, gfn)))
		return IMEE_REGION_LOCAL;
	idx = srcu_read_lock(&target->srcu);
	in_target = imee_user_slot(gfn_to_memslot(target, gfn));
	srcu_read_unlock(&target->srcu, idx);
	return in_target ? IMEE_REGION_TARGET : IMEE_REGION_NONE;
}

int kvm_imee_ept_violation(struct kvm_vcpu *vcpu, u64 gpa, u64 qual, u64 gla)
{
	struct imee *imee = imee_running(vcpu);
	u64 gfn = gpa_to_gfn(gpa);

	if (!imee)
		return -EPERM;
	if (!(qual & IMEE_QUAL_GLA_VALID))
		gla = 0;
	if (imee_trace)
		pr_info("EPT violation gpa 0x%llx qual 0x%llx gla 0x%llx\n", gpa, qual, gla);
	if (gfn > IMEE_EPT_MAX_GFN)
		return imee_stop(imee, IMEE_FAULT_NO_GPA, 0, gpa, gla);
	if (gfn != imee->last_gfn) {
		imee->last_gfn = gfn;
		imee->repeats = 0;
	} else if (++imee->repeats > IMEE_MAX_REPEATS) {
		pr_warn_ratelimited("EPT violations repeat at GPA 0x%llx (qualification 0x%llx)\n",
				    gpa, qual);
		return imee_stop(imee, IMEE_FAULT_EXIT, EXIT_REASON_EPT_VIOLATION, gpa, gla);
	}

	switch (imee_classify(imee_region_of(imee, gfn), qual)) {
	case IMEE_MAP_LOCAL:
		return imee_map_local(imee, gfn, gfn, IMEE_EPT_RWX);
	case IMEE_MAP_AGENT:
		return imee_map_local(imee, gfn, imee->agent_local_gfn,
				      IMEE_EPT_X);
	case IMEE_MAP_TARGET:
		return imee_map_target(imee, gfn, gla);
	case IMEE_STOP_BLIND_SPOT:
		return imee_stop(imee, IMEE_FAULT_BLIND_SPOT, 0, gpa, gla);
	case IMEE_STOP_NEEDS_A_BIT:
		return imee_stop(imee, IMEE_FAULT_NEEDS_A_BIT, 0, gpa, gla);
	case IMEE_STOP_FORBIDDEN:
		return imee_stop(imee, IMEE_FAULT_FORBIDDEN, (u32)qual, gpa,
				 gla);
	case IMEE_STOP_NO_GPA:
	default:
		return imee_stop(imee, IMEE_FAULT_NO_GPA, 0, gpa, gla);
	}
}
EXPORT_SYMBOL_GPL(kvm_imee_ept_violation);

int kvm_imee_exception(struct kvm_vcpu *vcpu, u32 vector, bool has_error,
		       u32 error_code, u64 cr2)
{
	struct imee *imee = imee_running(vcpu);
	u32 info = vector & 0xff;

	if (!imee)
		return -EPERM;
	if (imee_trace)
		pr_info("exception %u error 0x%x cr2 0x%llx\n", vector, error_code, cr2);
	if (has_error)
		info |= BIT(8) | (error_code << 16);
	return imee_stop(imee, IMEE_FAULT_EXCEPTION, info,
			 vector == PF_VECTOR ? cr2 : 0, 0);
}
EXPORT_SYMBOL_GPL(kvm_imee_exception);

int kvm_imee_unexpected_exit(struct kvm_vcpu *vcpu, u32 reason, u64 gpa)
{
	struct imee *imee = imee_running(vcpu);

	if (!imee)
		return -EPERM;
	return imee_stop(imee, IMEE_FAULT_EXIT, reason, gpa, 0);
}
EXPORT_SYMBOL_GPL(kvm_imee_unexpected_exit);

/* ------------------------------------------------------------ invalidation */

static void imee_flush(struct imee *imee)
{
	/* KVM_REQ_TLB_FLUSH: INVEPT (global) before the vCPU's next entry */
	kvm_flush_remote_tlbs(imee->shell);
}

/* Under imee->mmu_lock: unmap what @kvm's VMM addresses [start, end) back. */
static bool imee_zap_hva(struct imee *imee, struct kvm *kvm,
			 unsigned long start, unsigned long end)
{
	struct kvm_memory_slot *slot;
	bool any = false;
	int bkt, idx;

	idx = srcu_read_lock(&kvm->srcu);
	kvm_for_each_memslot(slot, bkt, kvm_memslots(kvm)) {
		unsigned long s = max(start, slot->userspace_addr);
		unsigned long e = min(end, slot->userspace_addr +
				      (slot->npages << PAGE_SHIFT));

		if (s < e)
			any |= imee_ept_zap(&imee->ept,
					    hva_to_gfn_memslot(s, slot),
					    hva_to_gfn_memslot(e + PAGE_SIZE - 1,
							       slot));
	}
	srcu_read_unlock(&kvm->srcu, idx);
	return any;
}

/*
 * From the target's MMU notifier, after KVM raised mmu_invalidate_in_progress
 * for the range and before the pages are freed: unmap and flush.
 */
void __kvm_imee_invalidate_hva(struct kvm *kvm, unsigned long start,
			       unsigned long end)
{
	struct imee *imee;

	rcu_read_lock();
	list_for_each_entry_rcu(imee, &imee_list, node) {
		bool zapped = false;

		if (READ_ONCE(imee->target) != kvm)
			continue;
		spin_lock(&imee->mmu_lock);
		if (imee->target == kvm)
			zapped = imee_zap_hva(imee, kvm, start, end);
		spin_unlock(&imee->mmu_lock);
		if (zapped)
			imee_flush(imee);
	}
	rcu_read_unlock();
}

/* After a memslot change of the target, or when its mm exits. */
void __kvm_imee_invalidate_all(struct kvm *kvm, bool mm_gone)
{
	struct imee *imee;

	rcu_read_lock();
	list_for_each_entry_rcu(imee, &imee_list, node) {
		if (READ_ONCE(imee->target) != kvm)
			continue;
		spin_lock(&imee->mmu_lock);
		if (imee->target == kvm) {
			imee_ept_zap(&imee->ept, 0, IMEE_EPT_MAX_GFN + 1);
			if (mm_gone)
				WRITE_ONCE(imee->target_gone, true);
		}
		spin_unlock(&imee->mmu_lock);
		imee_flush(imee);
	}
	rcu_read_unlock();
}

/* ------------------------------------------------------------ activation */

static u32 imee_paging_of(struct kvm_vcpu *v)
{
	u64 cr0 = READ_ONCE(v->arch.cr0), cr4 = READ_ONCE(v->arch.cr4);
	u64 efer = READ_ONCE(v->arch.efer);

	return (cr4 & X86_CR4_LA57 ? IMEE_PAGING_LA57 : 0) |
	       (efer & EFER_NX ? IMEE_PAGING_NXE : 0) |
	       (cr0 & X86_CR0_WP ? IMEE_PAGING_WP : 0) |
	       (cr4 & X86_CR4_PCIDE ? IMEE_PAGING_PCIDE : 0) |
	       (efer & EFER_LMA ? IMEE_PAGING_LONG : 0);
}

/*
 * The target vCPU's CR3 now.  The patched vmx_vcpu_run() caches the guest's
 * CR3 in arch.cr3 at every VM exit, so it is current whenever the vCPU is
 * outside guest mode; a vCPU in guest mode is kicked out first (one VM exit
 * of the target, then it re-enters) and the value of that exit is used.
 */
static void imee_read_target(struct imee *imee, struct imee_activate *out)
{
	struct kvm_vcpu *tv = kvm_get_vcpu(imee->target, imee->vcpu_index);
	unsigned long deadline = jiffies + msecs_to_jiffies(IMEE_KICK_TIMEOUT_MS);
	u64 exits = READ_ONCE(tv->stat.exits);
	u32 stale = 0;

	if (READ_ONCE(tv->mode) != OUTSIDE_GUEST_MODE) {
		kvm_vcpu_kick(tv);
		while (READ_ONCE(tv->mode) != OUTSIDE_GUEST_MODE &&
		       READ_ONCE(tv->stat.exits) == exits) {
			if (time_after(jiffies, deadline)) {
				stale = IMEE_PAGING_STALE;
				break;
			}
			cpu_relax();
		}
	}
	/* the exit's CR3 store before vcpu->mode = OUTSIDE_GUEST_MODE */
	smp_rmb();
	out->target_cr3 = READ_ONCE(tv->arch.cr3);
	out->target_paging = imee_paging_of(tv) | stale;
}

static void imee_report(struct imee *imee, long r, struct imee_activate *out)
{
	switch (imee->fault.kind) {
	case 0:
		if (r == -EINTR)
			out->status = IMEE_RESULT_INTERRUPTED;
		else if (imee->vcpu->run->exit_reason == KVM_EXIT_HLT)
			out->status = IMEE_RESULT_DONE;
		else
			imee_stop(imee, IMEE_FAULT_EXIT,
				  imee->vcpu->run->exit_reason, 0, 0);
		break;
	case IMEE_FAULT_TARGET_GONE:
		out->status = IMEE_RESULT_TARGET_GONE;
		return;
	}
	if (imee->fault.kind) {
		out->status = IMEE_RESULT_FAULT;
		out->fault_kind = imee->fault.kind;
		out->fault_info = imee->fault.info;
		out->fault_addr = imee->fault.addr;
		out->fault_gva = imee->fault.gva;
	}
}

static long imee_activate(struct imee *imee, struct imee_activate __user *uarg)
{
	struct kvm_vcpu *vcpu = imee->vcpu;
	struct imee_activate arg;
	u64 exits;
	long r;

	if (copy_from_user(&arg, uarg, sizeof(arg)))
		return -EFAULT;
	if (arg.version != IMEE_VERSION)
		return -EPROTONOSUPPORT;
	if (arg.mode != IMEE_ACTIVATE_BATCH && arg.mode != IMEE_ACTIVATE_POLL)
		return -EINVAL;
	if (arg.flags)
		return -EINVAL;
	/* the shell's pages are pinned through current->mm */
	if (imee->shell->mm != current->mm)
		return -EIO;
	arg = (struct imee_activate){ .version = arg.version, .mode = arg.mode };

	if (mutex_lock_killable(&imee->lock))
		return -EINTR;
	if (READ_ONCE(imee->target_gone)) {
		arg.status = IMEE_RESULT_TARGET_GONE;
		goto done;
	}
	imee_read_target(imee, &arg);

	r = mutex_lock_killable(&vcpu->mutex);
	if (r)
		goto unlock;
	if (!imee->exceptions_intercepted) {
		/* the patched vmx_update_exception_bitmap() sets every bit */
		vcpu_load(vcpu);
		static_call(kvm_x86_update_exception_bitmap)(vcpu);
		vcpu_put(vcpu);
		imee->exceptions_intercepted = true;
	}
	memset(&imee->fault, 0, sizeof(imee->fault));
	imee->last_gfn = ~0ULL;
	WRITE_ONCE(imee->runner, current);
	exits = vcpu->stat.exits;
	vcpu->wants_to_run = true;	/* as KVM_RUN sets it */
	r = kvm_arch_vcpu_ioctl_run(vcpu);
	vcpu->wants_to_run = false;
	arg.exits = vcpu->stat.exits - exits;
	if (imee_trace)
		pr_info("activation: run %ld, exit reason %u, fault %u, %llu exits\n", r,
			vcpu->run->exit_reason, imee->fault.kind, arg.exits);
	WRITE_ONCE(imee->runner, NULL);
	mutex_unlock(&vcpu->mutex);
	if (r < 0 && r != -EINTR && !imee->fault.kind)
		goto unlock;
	imee_report(imee, r, &arg);
done:
	r = copy_to_user(uarg, &arg, sizeof(arg)) ? -EFAULT : 0;
unlock:
	mutex_unlock(&imee->lock);
	return r;
}

/* ------------------------------------------------------------ the ImEE fd */

static long imee_ioctl(struct file *filp, unsigned int ioctl,
		       unsigned long arg)
{
	struct imee *imee = filp->private_data;

	switch (ioctl) {
	case IMEE_ACTIVATE:
		return imee_activate(imee, (void __user *)arg);
	default:
		return -ENOTTY;
	}
}

static void imee_free(struct imee *imee)
{
	struct page *page;
	unsigned long gfn;

	imee_ept_destroy(&imee->ept);
	xa_for_each(&imee->pins, gfn, page) {
		unpin_user_page(page);
		atomic_long_dec(&imee_held_pages);
	}
	xa_destroy(&imee->pins);
	if (imee->target)
		kvm_put_kvm(imee->target);
	kvm_put_kvm(imee->shell);
	kfree(imee);
	atomic_long_dec(&imee_objects);
}

static int imee_release(struct inode *inode, struct file *filp)
{
	struct imee *imee = filp->private_data;

	spin_lock(&imee_list_lock);
	list_del_rcu(&imee->node);
	atomic_dec(&kvm_imee_count);
	spin_unlock(&imee_list_lock);
	synchronize_rcu();	/* no hook sees the ImEE any more */
	/*
	 * Should user space run the shell's vCPU itself, it must not enter
	 * with our EPT pointer again: it reloads KVM's before its next entry,
	 * and the TLB_FLUSH request waits until it is out of guest mode.
	 */
	kvm_make_request(KVM_REQ_LOAD_MMU_PGD, imee->vcpu);
	kvm_make_all_cpus_request(imee->shell, KVM_REQ_TLB_FLUSH);
	imee_free(imee);
	return 0;
}

static const struct file_operations imee_fops = {
	.owner		= THIS_MODULE,
	.release	= imee_release,
	.unlocked_ioctl	= imee_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
	.llseek		= noop_llseek,
};

/* ------------------------------------------------------------ launch */

/*
 * The ImEE needs VMX with EPT, 4-level EPT with write-back paging
 * structures, and execute-only EPT entries (the agent's page).
 */
static bool imee_host_supported(void)
{
	u64 cap;

	if (!tdp_enabled || !kvm_x86_ops.name ||
	    strcmp(kvm_x86_ops.name, "kvm_intel"))
		return false;
	if (rdmsrl_safe(MSR_IA32_VMX_EPT_VPID_CAP, &cap))
		return false;
	return (cap & VMX_EPT_EXECUTE_ONLY_BIT) &&
	       (cap & VMX_EPT_PAGE_WALK_4_BIT) && (cap & VMX_EPTP_WB_BIT);
}

/* A reference on the live KVM VM behind @fd. */
static int imee_get_vm(int fd, struct kvm **out)
{
	struct fd f = fdget(fd);
	int r = 0;

	if (!f.file)
		return -EBADF;
	/* Same test as SEV's intra-host migration: f_op is kvm_vm_fops. */
	if (!file_is_kvm(f.file)) {
		r = -EBADF;
	} else if (READ_ONCE(((struct kvm *)f.file->private_data)->vm_dead)) {
		r = -EIO;
	} else {
		*out = f.file->private_data;
		kvm_get_kvm(*out);
	}
	fdput(f);
	return r;
}

static bool imee_overlap(const struct kvm_memory_slot *a,
			 const struct kvm_memory_slot *b)
{
	return a->base_gfn < b->base_gfn + b->npages &&
	       b->base_gfn < a->base_gfn + a->npages;
}

/*
 * The agent's page is shell memory, agent_gpa is not, and no shell memslot
 * hides target memory (the shell's pages would win).
 */
static int imee_check_layout(struct kvm *shell, struct kvm *target,
			     u64 agent_gfn, u64 agent_local_gfn)
{
	struct kvm_memory_slot *s, *t;
	int is, it, bs, bt, r = 0;

	is = srcu_read_lock(&shell->srcu);
	it = srcu_read_lock(&target->srcu);
	if (!imee_user_slot(gfn_to_memslot(shell, agent_local_gfn)) ||
	    gfn_to_memslot(shell, agent_gfn))
		r = -EINVAL;
	kvm_for_each_memslot(s, bs, kvm_memslots(shell))
		kvm_for_each_memslot(t, bt, kvm_memslots(target))
			if (imee_user_slot(t) && imee_overlap(s, t))
				r = -EINVAL;
	srcu_read_unlock(&target->srcu, it);
	srcu_read_unlock(&shell->srcu, is);
	return r;
}

static void imee_set_target(struct imee *imee, struct kvm *target,
			    const struct imee_launch *arg)
{
	imee->target = target;
	imee->vcpu_index = arg->vcpu_index;
	imee->agent_gfn = gpa_to_gfn(arg->agent_gpa);
	imee->agent_local_gfn = gpa_to_gfn(arg->agent_local_gpa);
	imee->target_gone = false;
}

/* A new ImEE in the shell @arg->shell_fd; takes over the @target reference. */
static long imee_create(const struct imee_launch *arg, struct kvm *target)
{
	struct kvm_vcpu *vcpu;
	struct kvm *shell;
	struct imee *imee;
	int r;

	r = imee_get_vm(arg->shell_fd, &shell);
	if (r)
		return r;
	r = -EINVAL;
	if (shell == target || shell->mm != current->mm ||
	    atomic_read(&shell->online_vcpus) != 1)
		goto put_shell;
	vcpu = kvm_get_vcpu(shell, 0);
	r = -EBUSY;	/* a vCPU that ran has KVM's EPT and state in use */
	if (!vcpu || READ_ONCE(vcpu->arch.last_vmentry_cpu) != -1 ||
	    imee_busy(shell, target))
		goto put_shell;
	r = imee_check_layout(shell, target, gpa_to_gfn(arg->agent_gpa),
			      gpa_to_gfn(arg->agent_local_gpa));
	if (r)
		goto put_shell;

	r = -ENOMEM;
	imee = kzalloc(sizeof(*imee), GFP_KERNEL_ACCOUNT);
	if (!imee)
		goto put_shell;
	atomic_long_inc(&imee_objects);
	imee->shell = shell;
	imee->vcpu = vcpu;
	mutex_init(&imee->lock);
	spin_lock_init(&imee->mmu_lock);
	xa_init(&imee->pins);
	r = imee_ept_init(&imee->ept);
	if (r) {
		imee_free(imee);
		return r;
	}

	spin_lock(&imee_list_lock);
	if (__imee_busy(shell, target)) {
		spin_unlock(&imee_list_lock);
		imee_free(imee);
		return -EBUSY;
	}
	imee_set_target(imee, target, arg);
	list_add_rcu(&imee->node, &imee_list);
	atomic_inc(&kvm_imee_count);
	spin_unlock(&imee_list_lock);

	kvm_make_request(KVM_REQ_LOAD_MMU_PGD, vcpu);
	r = anon_inode_getfd("kvm-imee", &imee_fops, imee, O_RDWR | O_CLOEXEC);
	if (r < 0) {
		spin_lock(&imee_list_lock);
		list_del_rcu(&imee->node);
		atomic_dec(&kvm_imee_count);
		spin_unlock(&imee_list_lock);
		synchronize_rcu();
		imee->target = NULL;	/* the caller keeps that reference */
		imee_free(imee);
	}
	return r;

put_shell:
	kvm_put_kvm(shell);
	return r;
}

/*
 * Move the ImEE of @arg->imee_fd to @target (or, same target, its agent to
 * a new home): new target fields, an empty EPT, one TLB flush.  Nothing is
 * allocated or pinned again.
 */
static long imee_retarget(const struct imee_launch *arg, struct kvm *target)
{
	struct fd f = fdget(arg->imee_fd);
	struct imee *imee;
	struct kvm *old;
	int r;

	if (!f.file)
		return -EBADF;
	r = -EBADF;
	if (f.file->f_op != &imee_fops)
		goto out;
	imee = f.file->private_data;
	r = -EINVAL;
	if (target == imee->shell)
		goto out;
	r = -EBUSY;
	if (imee_busy(NULL, target))
		goto out;
	r = imee_check_layout(imee->shell, target, gpa_to_gfn(arg->agent_gpa),
			      gpa_to_gfn(arg->agent_local_gpa));
	if (r)
		goto out;
	r = -EINTR;
	if (mutex_lock_killable(&imee->lock))
		goto out;
	spin_lock(&imee->mmu_lock);
	old = imee->target;
	imee_set_target(imee, target, arg);
	imee_ept_zap(&imee->ept, 0, IMEE_EPT_MAX_GFN + 1);
	spin_unlock(&imee->mmu_lock);
	mutex_unlock(&imee->lock);
	imee_flush(imee);
	kvm_put_kvm(old);
	r = 0;
out:
	fdput(f);
	return r;
}

static long imee_launch(struct imee_launch __user *uarg)
{
	struct imee_launch arg;
	struct kvm *target;
	bool retarget;
	long r;

	if (copy_from_user(&arg, uarg, sizeof(arg)))
		return -EFAULT;
	if (arg.version != IMEE_VERSION)
		return -EPROTONOSUPPORT;
	if (arg.flags & ~IMEE_LAUNCH_VALID_FLAGS)
		return -EINVAL;
	if (memchr_inv(arg.reserved, 0, sizeof(arg.reserved)))
		return -EINVAL;
	retarget = arg.flags & IMEE_LAUNCH_RETARGET;
	if (retarget ? arg.shell_fd != -1 : arg.imee_fd != -1)
		return -EINVAL;
	if (!PAGE_ALIGNED(arg.agent_gpa) || !PAGE_ALIGNED(arg.agent_local_gpa) ||
	    gpa_to_gfn(arg.agent_gpa) > IMEE_EPT_MAX_GFN ||
	    gpa_to_gfn(arg.agent_local_gpa) > IMEE_EPT_MAX_GFN ||
	    arg.agent_gpa == arg.agent_local_gpa)
		return -EINVAL;
	if (!imee_host_supported())
		return -EOPNOTSUPP;

	r = imee_get_vm(arg.vm_fd, &target);
	if (r)
		return r;
	/* online_vcpus only grows; vcpu_array[i] is set before it does */
	if (arg.vcpu_index >= atomic_read(&target->online_vcpus) ||
	    !kvm_get_vcpu(target, arg.vcpu_index)) {
		r = -EINVAL;
		goto put_target;
	}
	r = retarget ? imee_retarget(&arg, target) : imee_create(&arg, target);
	if (r >= 0)
		return r;	/* the ImEE holds the target reference */
put_target:
	kvm_put_kvm(target);
	return r;
}

long kvm_imee_dev_ioctl(struct file *filp, unsigned int ioctl,
			unsigned long arg)
{
	switch (ioctl) {
	case IMEE_LAUNCH:
		return imee_launch((void __user *)arg);
	default:
		return -ENOTTY;
	}
}
