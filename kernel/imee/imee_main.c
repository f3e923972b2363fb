// SPDX-License-Identifier: GPL-2.0
/*
 * ImEE core: launch, activation, exits and invalidation of an immersive
 * execution environment on a target KVM VM (out-of-VM introspection at
 * native speed).  Linked into kvm.ko; KVM reaches it through the hooks in
 * <linux/kvm_imee.h>.
 *
 * An ImEE is a "shell" VM that user space created with stock ioctls (one
 * vCPU that never ran, memslots holding the agent's local pages) plus a
 * two-dimensional page table (TDP: EPT on Intel, NPT on AMD) that ImEE
 * builds itself (tdp.c) and loads into the shell's vCPU in place of KVM's:
 * target memory read-only and no-execute, the agent's page at agent_gpa
 * execute-only (NPT: readable and executable), the shell's pages pinned.
 * It is filled on TDP faults (EPT violations, #NPF), one page at a time,
 * from the target's memslots and the target VMM's page tables
 * (get_user_pages_remote), and emptied whenever KVM's MMU notifier or a
 * memslot change says a host page may no longer be the target's.  KVM runs
 * the vCPU (kvm_arch_vcpu_ioctl_run); every exception exits (all
 * intercepted) and ends the activation with a typed fault, as do TDP
 * faults the rules of tdp_logic.h refuse.  What differs between Intel and
 * AMD is in intel.c and amd.c (struct imee_vendor, core.h).
 *
 * Coherence with the target (security review, DESIGN.md "Kernel patch
 * principles"): every path that installs a TDP entry for target memory
 * re-checks, under imee->mmu_lock, imee->gen -- bumped under that lock by
 * every MMU-notifier invalidation of a target memslot, by the notifier's
 * release, by every memslot delete/move of the target and by retarget --
 * and target_gone, as well as KVM's own mmu_invalidate_retry_hva() (6.1) or
 * _gfn() (6.12), imee_invalidate_retry() in compat.h; a page
 * taken before a bump is put back, never mapped.  The ImEE's TLB is
 * flushed with KVM_REQ_TLB_FLUSH to its own vCPU (imee_flush()), which
 * does a global INVEPT (Intel) or flushes the vCPU's ASID (AMD) before
 * that vCPU enters again.  Lock order:
 * target kvm->srcu (read) -> target kvm->mmu_lock (read) -> imee->mmu_lock;
 * imee->lock (mutex) is taken outside all of them.
 */

#define pr_fmt(fmt) "kvm-imee: " fmt

#include <linux/anon_inodes.h>
#include <linux/delay.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/highmem.h>
#include <linux/jiffies.h>
#include <linux/kvm_host.h>
#include <linux/kvm_imee.h>
#include <linux/minmax.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/mutex.h>
#include <linux/rculist.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/stringify.h>
#include <linux/sysfs.h>
#include <linux/uaccess.h>
#include <linux/xarray.h>

#include "compat.h"
#include "core.h"

/* How long activation waits for a running target vCPU to exit. */
#define IMEE_KICK_TIMEOUT_MS	100

/* imee->fault.kind beyond the uapi kinds: the target's memory is gone */
#define IMEE_FAULT_TARGET_GONE	0x100

/* kvm.imee_trace=1: log every exit ImEE handles (debugging a CPU or emulator). */
static bool imee_trace;
module_param(imee_trace, bool, 0644);

/*
 * kvm.imee_test_map_delay_ms (tests only, root): sleep this long (at most
 * IMEE_TEST_DELAY_MAX_MS) between taking a target page and installing it,
 * so that the lab tests can make an invalidation, a memslot change or the
 * VMM's exit land inside that window every time.  0 (default): no delay.
 */
static unsigned int imee_test_map_delay_ms;
module_param(imee_test_map_delay_ms, uint, 0644);
#define IMEE_TEST_DELAY_MAX_MS	1000

/* modinfo "version" of kvm.ko (kvm-intel.ko: intel_modinfo.c) */
MODULE_VERSION("imee-" __stringify(IMEE_VERSION));

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

/*
 * A private copy of a target paging-structure page, mapped writable in the
 * ImEE's TDP for one batch activation (IMEE_FEATURE_WALK_COPIES): an AMD
 * CPU's nested walk writes every guest entry it reads, so a read-only
 * mapping stops every walk (kernel/README.md, "Guest page-table walks").
 * The walk's A-bit writes land in the copy.  When the activation ends the
 * copy is unmapped, compared with the target's page and freed.
 */
struct imee_walk_copy {
	u64 gfn;
	struct page *copy;	/* ours, the only page mapped writable at gfn */
	struct page *page;	/* the target's page it was copied from (ref) */
	unsigned long gen;	/* imee->gen when mapped */
};

/* Copies one activation may hold; then walks stop with NEEDS_A_BIT. */
#define IMEE_MAX_WALK_COPIES	256

struct imee_fault {
	u32 kind;
	u32 info;
	u64 addr;
	u64 gva;
};

struct imee {
	struct list_head node;
	const struct imee_vendor *vendor;
	struct kvm *shell;		/* reference held */
	struct kvm_vcpu *vcpu;		/* the shell's vCPU that runs the agent */
	struct mutex lock;		/* one activation or retarget at a time */
	/*
	 * mmu_lock: tdp, gen, target_gone, pinned, stats.  The target fields
	 * change under both locks.  Nests inside the target's kvm->mmu_lock.
	 */
	spinlock_t mmu_lock;
	unsigned long gen;		/* invalidation generation (see top) */
	struct kvm *target;		/* reference held */
	u32 vcpu_index;
	u64 agent_gfn;
	u64 agent_local_gfn;
	bool target_gone;		/* the target's mm has exited */
	bool closing;			/* release: the vCPU leaves our TDP */
	struct imee_tdp tdp;
	struct xarray pins;		/* shell gfn -> pinned page */
	unsigned long pinned;		/* pins charged to shell->mm locked_vm */
	struct task_struct *runner;	/* task in kvm_arch_vcpu_ioctl_run */
	struct imee_fault fault;	/* of the current activation */
	/* this activation serves walk writes with copies (runner only) */
	bool walk_copies;
	unsigned int ncopies;
	struct imee_walk_copy *copies;	/* IMEE_MAX_WALK_COPIES, or NULL */
	u64 last_gfn;			/* TDP faults in a row on it */
	unsigned int repeats;
	u64 run_tdp_faults;		/* exits of the current activation */
	u64 run_exceptions;
	u64 run_exit_reasons[IMEE_EXIT_REASONS];
	bool exceptions_intercepted;
	struct imee_stats stats;	/* counters since launch */
	unsigned long vcpu_mask[BITS_TO_LONGS(KVM_MAX_VCPUS)]; /* vcpu only */
};

/*
 * TDP faults in a row on one GFN before the activation is ended: a
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
	if (imee && (imee->vcpu != vcpu || READ_ONCE(imee->runner) != current))
		imee = NULL;
	rcu_read_unlock();
	return imee;
}

/* ------------------------------------------------------------ exits */

/*
 * From the vendor's vcpu_run after every VM exit of any VM while an ImEE
 * exists (before KVM handles it, fastpath exits included): count the exits
 * of a running activation by reason.  Only the runner's task, inside
 * kvm_arch_vcpu_ioctl_run() under vcpu->mutex, writes run_exit_reasons.
 */
void imee_count_exit(struct kvm_vcpu *vcpu, u32 reason)
{
	struct imee *imee = imee_running(vcpu);

	if (imee && reason < IMEE_EXIT_REASONS)
		imee->run_exit_reasons[reason]++;
}

/*
 * From vmx_load_mmu_pgd() / svm_load_mmu_pgd(), whenever the vCPU (re)loads
 * its TDP root (KVM_REQ_LOAD_MMU_PGD, a new root): the ImEE's vCPU, and
 * only it, runs on the ImEE's TDP, so imee_flush() needs to reach that one
 * vCPU.  Any other vCPU user space adds to the shell keeps KVM's (of the
 * shell's memory).
 */
u64 kvm_imee_tdp_pointer(struct kvm_vcpu *vcpu, u64 kvm_pointer)
{
	struct imee *imee;
	u64 pointer = kvm_pointer;

	rcu_read_lock();
	imee = imee_of_shell(vcpu->kvm);
	if (imee && imee->vcpu == vcpu && !READ_ONCE(imee->closing))
		pointer = imee->vendor->tdp_pointer(imee_tdp_root_pa(&imee->tdp));
	rcu_read_unlock();
	return pointer;
}
EXPORT_SYMBOL_GPL(kvm_imee_tdp_pointer);

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

/*
 * Flush the ImEE vCPU's TLB: KVM_REQ_TLB_FLUSH to that vCPU alone, and wait
 * (KVM_REQUEST_WAIT: an IPI acknowledged after the vCPU left guest mode)
 * until it runs outside guest mode; it does not re-enter before handling
 * the request.  The handler is kvm_vcpu_flush_tlb_all().  Intel:
 * vmx_flush_tlb_all(), a *global* INVEPT (ept_sync_global(); launch
 * requires EPT), which drops the guest-physical and combined mappings of
 * every EPTP, the ImEE's included, on the CPU the vCPU is about to enter
 * on; a vCPU that moves to another CPU gets a KVM_REQ_TLB_FLUSH from
 * vmx_vcpu_load_vmcs() there.  AMD: svm_flush_tlb_all() ->
 * svm_flush_tlb_asid(), TLB_CONTROL_FLUSH_ASID at the next VMRUN (or a new
 * ASID), which drops every translation tagged with the vCPU's ASID, nested
 * ones included; a vCPU that moves to another CPU gets a new ASID there
 * (pre_svm_run()).  Never kvm_flush_remote_tlbs(shell): with Hyper-V's
 * remote flush it flushes the root KVM tracked for the shell
 * (hv_track_root_tdp()), not the ImEE's, and sends no request at all;
 * svm_flush_tlb_all() does the same under Hyper-V's enlightened NPT TLB,
 * hence amd.c refuses Hyper-V hosts.  Callable in atomic context (as KVM's
 * own flushes under mmu_lock).
 */
static void imee_flush(struct imee *imee)
{
	kvm_make_vcpus_request_mask(imee->shell, KVM_REQ_TLB_FLUSH,
				    imee->vcpu_mask);
}

/* Under imee->mmu_lock. */
static void imee_invalidated(struct imee *imee)
{
	imee->gen++;
	imee->stats.invalidations++;
	imee->stats.tlb_flushes++;
}

/* Map @gfn to the shell's page @local_gfn, pinned for the ImEE's life. */
static int imee_map_local(struct imee *imee, u64 gfn, u64 local_gfn,
			  unsigned int perms)
{
	struct mm_struct *mm = imee->shell->mm;
	struct kvm_memory_slot *slot;
	struct page *page;
	bool pinned = false;
	int r;

	r = imee_tdp_topup(&imee->tdp);
	if (r)
		return r;
	page = xa_load(&imee->pins, local_gfn);
	if (!page) {
		/* the vCPU holds the shell's srcu; current->mm is the shell's */
		slot = kvm_vcpu_gfn_to_memslot(imee->vcpu, local_gfn);
		if (!imee_user_slot(slot) || (slot->flags & KVM_MEM_READONLY))
			return imee_stop(imee, IMEE_FAULT_NO_GPA, 0,
					 gfn_to_gpa(gfn), 0);
		if (imee_slot_guest_memfd(slot))
			return -EOPNOTSUPP;	/* created after launch */
		/* RLIMIT_MEMLOCK of the caller (CAP_IPC_LOCK bypasses it) */
		r = account_locked_vm(mm, 1, true);
		if (r)
			return r;	/* -ENOMEM, as mlock(2) */
		if (pin_user_pages_fast(__gfn_to_hva_memslot(slot, local_gfn),
					1, FOLL_WRITE | FOLL_LONGTERM,
					&page) != 1) {
			account_locked_vm(mm, 1, false);
			return imee_stop(imee, IMEE_FAULT_NO_GPA, 0,
					 gfn_to_gpa(gfn), 0);
		}
		r = xa_err(xa_store(&imee->pins, local_gfn, page,
				    GFP_KERNEL_ACCOUNT));
		if (r) {
			unpin_user_page(page);
			account_locked_vm(mm, 1, false);
			return r;
		}
		atomic_long_inc(&imee_held_pages);
		pinned = true;
	}
	/*
	 * Security review: a shell page, pinned (FOLL_LONGTERM) and charged
	 * until imee_free(): it stays the ImEE's own page whatever the shell's
	 * VMM does to its mapping, so no invalidation or generation check
	 * applies (no target memory here).  Lock: imee->mmu_lock orders it
	 * against the zaps.  Test: KernelImee.PinnedPagesAreChargedToMemlock.
	 */
	spin_lock(&imee->mmu_lock);
	if (pinned)
		imee->pinned++;
	imee_tdp_map(&imee->tdp, gfn, page_to_phys(page), perms);
	imee->stats.local_maps++;
	spin_unlock(&imee->mmu_lock);
	return 1;
}

/* Tests only: widen the window between GUP and the install. */
static void imee_test_delay(void)
{
	unsigned int ms = READ_ONCE(imee_test_map_delay_ms);

	if (unlikely(ms))
		msleep_interruptible(min_t(unsigned int, ms,
					   IMEE_TEST_DELAY_MAX_MS));
}

/*
 * Map target @gfn read-only.  The page is looked up as KVM's own fault path
 * does: memslot -> VMM address -> page (get_user_pages_remote() on the VMM's
 * mm, no FOLL_WRITE); it is installed only if nothing could have taken it
 * from the target meanwhile (see the security review below).  No reference
 * is kept once it is mapped: as in KVM, the invalidation hooks are what keep
 * a freed page out of reach.  @copy (a walk's write, IMEE_MAP_WALK_COPY):
 * map a private copy of the page writable instead, and keep the reference
 * until the activation ends (imee_end_walk_copies()).
 */
static int imee_map_target(struct imee *imee, u64 gfn, u64 gla, bool copy)
{
	struct kvm *target = imee->target;
	struct mm_struct *mm = target->mm;
	struct kvm_memory_slot *slot;
	unsigned long mmu_seq, hva, gen;
	struct page *page, *copy_page = NULL;
	bool gone, mapped = false;
	int idx, r;
	long n;

	r = imee_tdp_topup(&imee->tdp);
	if (r)
		return r;
	spin_lock(&imee->mmu_lock);
	gen = imee->gen;
	gone = imee->target_gone;
	spin_unlock(&imee->mmu_lock);
	if (gone)
		return imee_stop(imee, IMEE_FAULT_TARGET_GONE, 0, 0, 0);

	idx = srcu_read_lock(&target->srcu);
	mmu_seq = target->mmu_invalidate_seq;
	/* pairs with the smp_wmb() in kvm_mmu_invalidate_end() */
	smp_rmb();
	slot = gfn_to_memslot(target, gfn);
	if (slot && slot->id < KVM_USER_MEM_SLOTS &&
	    (slot->flags & KVM_MEMSLOT_INVALID)) {
		/* being deleted or moved: retry, as KVM's RET_PF_RETRY */
		imee->repeats = 0;
		r = 1;
		goto out;
	}
	if (!imee_user_slot(slot)) {
		r = imee_stop(imee, IMEE_FAULT_NO_GPA, 0, gfn_to_gpa(gfn), gla);
		goto out;
	}
	if (imee_slot_guest_memfd(slot)) {
		r = -EOPNOTSUPP;	/* created after launch: API.md */
		goto out;
	}
	hva = __gfn_to_hva_memslot(slot, gfn);
	if (!mmget_not_zero(mm)) {
		r = imee_stop(imee, IMEE_FAULT_TARGET_GONE, 0, 0, 0);
		goto out;
	}
	mmap_read_lock(mm);
	n = imee_gup_remote_one(mm, hva, 0, &page);
	mmap_read_unlock(mm);
	mmput(mm);	/* may be the last: exit_mmap -> release, below */
	if (n != 1) {
		r = imee_stop(imee, IMEE_FAULT_NO_GPA, 0, gfn_to_gpa(gfn), gla);
		goto out;
	}
	imee_test_delay();
	if (copy) {
		copy_page = alloc_page(GFP_KERNEL_ACCOUNT);
		if (!copy_page) {
			put_page(page);
			r = -ENOMEM;
			goto out;
		}
		atomic_long_inc(&imee_held_pages);
		/* a snapshot: what the target writes later is found at the end */
		copy_highpage(copy_page, page);
	}

	/*
	 * Security review -- the only path that puts target memory into an
	 * ImEE's TDP.  @page is referenced, but may already have stopped being
	 * the target's (and be freed at put_page() below) if, since gen and
	 * mmu_seq were sampled before get_user_pages_remote():
	 *  - an MMU-notifier invalidation covered a target memslot
	 *    (__kvm_imee_invalidate_hva(): gen++, in invalidate_range_start
	 *    after KVM raised mmu_invalidate_in_progress; one still in
	 *    progress is seen by imee_invalidate_retry());
	 *  - the VMM's mm exited: kvm_mmu_notifier_release() ->
	 *    __kvm_imee_invalidate_gfn(mm_gone): gen++, target_gone.  It does
	 *    not bump mmu_invalidate_seq, and afterwards the notifier is
	 *    unhooked: an entry installed now would outlive the page;
	 *  - a memslot of the target was deleted or moved
	 *    (kvm_invalidate_memslot() -> __kvm_imee_invalidate_gfn(): gen++;
	 *    that also waits for our SRCU read section);
	 *  - a retarget (cannot overlap: both hold imee->lock).
	 * All of them bump gen under imee->mmu_lock, and the check and the
	 * install happen under the same lock (inside the target's mmu_lock,
	 * read, for imee_invalidate_retry()): a bump before the check
	 * refuses the page, one after it zaps the entry and flushes.
	 * Tests: KernelImee.VmmExitWhileMappingNeverMapsTheDyingPage (the
	 * VMM killed inside kvm.imee_test_map_delay_ms: the refused page),
	 * KernelImee.InvalidationsRacingPollModeNeverShowStaleBytes
	 * (invalidations and memslot delete/move racing the agent).
	 *
	 * A walk copy is checked and installed the same way; what it adds:
	 * the page mapped is ours, so the target is still never written (an
	 * agent that writes the copy changes its own view only: entries it
	 * forges reach no GPA it could not read already, and the end check
	 * sees the change).  The target's page is read again only at the
	 * activation's end, through the reference kept here, never mapped;
	 * a bump of gen since the install counts as a change unseen.  A
	 * target write to the page after the copy is the race the end check
	 * exists for; the check is tested with a copy that differs for sure
	 * (the walk sets an A bit in it):
	 * AgentBackendTest.PageTableReadBesideAWalkThatSetsAnABitIsTheTargets.
	 * No test writes the target's page in the middle of an activation.
	 */
	read_lock(&target->mmu_lock);
	spin_lock(&imee->mmu_lock);
	gone = imee->target_gone;
	if (!gone && imee->gen == gen &&
	    !imee_invalidate_retry(target, mmu_seq, gfn, hva)) {
		if (copy_page) {
			/* replaces a read-only entry of the target's page, if any */
			imee_tdp_map(&imee->tdp, gfn, page_to_phys(copy_page),
				     IMEE_PERM_R | IMEE_PERM_W);
			imee->copies[imee->ncopies++] = (struct imee_walk_copy){
				.gfn = gfn, .copy = copy_page, .page = page,
				.gen = gen };
			copy_page = NULL;
			page = NULL;
			kvm_make_request(KVM_REQ_TLB_FLUSH, imee->vcpu);
		} else {
			imee_tdp_map(&imee->tdp, gfn, page_to_phys(page),
				     IMEE_PERM_R);
		}
		imee->stats.target_maps++;
		mapped = true;
	} else {
		imee->stats.map_retries++;
	}
	spin_unlock(&imee->mmu_lock);
	read_unlock(&target->mmu_lock);
	if (copy_page) {
		__free_page(copy_page);
		atomic_long_dec(&imee_held_pages);
	}
	if (page)
		put_page(page);
	if (gone)
		r = imee_stop(imee, IMEE_FAULT_TARGET_GONE, 0, 0, 0);
	else
		r = 1;	/* mapped, or raced: the access faults again */
	if (imee_trace && !mapped)
		pr_info("GFN 0x%llx not mapped: invalidated meanwhile%s\n", gfn,
			gone ? " (target gone)" : "");
out:
	srcu_read_unlock(&target->srcu, idx);
	return r;
}

static enum imee_region imee_region_of(struct imee *imee, u64 gfn)
{
	struct kvm *target = imee->target;
	struct kvm_memory_slot *slot;
	bool in_target;
	int idx;

	if (gfn == imee->agent_gfn)
		return IMEE_REGION_AGENT;
	if (imee_user_slot(kvm_vcpu_gfn_to_memslot(imee->vcpu, gfn)))
		return IMEE_REGION_LOCAL;
	/* an INVALID slot (being deleted/moved) counts: map retries on it */
	idx = srcu_read_lock(&target->srcu);
	slot = gfn_to_memslot(target, gfn);
	in_target = slot && slot->id < KVM_USER_MEM_SLOTS;
	srcu_read_unlock(&target->srcu, idx);
	return in_target ? IMEE_REGION_TARGET : IMEE_REGION_NONE;
}

int imee_tdp_fault(struct kvm_vcpu *vcpu, u64 gpa, u64 gla,
		   unsigned int access, u32 info, u32 exit_reason)
{
	struct imee *imee = imee_running(vcpu);
	u64 gfn = gpa_to_gfn(gpa);

	if (!imee)
		return -EPERM;
	imee->run_tdp_faults++;
	if (imee_trace)
		pr_info("TDP fault gpa 0x%llx access 0x%x gla 0x%llx\n", gpa, access, gla);
	if (gfn > IMEE_TDP_MAX_GFN)
		return imee_stop(imee, IMEE_FAULT_NO_GPA, 0, gpa, gla);
	if (gfn != imee->last_gfn) {
		imee->last_gfn = gfn;
		imee->repeats = 0;
	} else if (++imee->repeats > IMEE_MAX_REPEATS) {
		pr_warn_ratelimited("TDP faults repeat at GPA 0x%llx (access 0x%x)\n",
				    gpa, access);
		return imee_stop(imee, IMEE_FAULT_EXIT, exit_reason, gpa, gla);
	}

	switch (imee_classify(imee_region_of(imee, gfn), access,
			      imee->vendor->format == IMEE_TDP_EPT,
			      imee->walk_copies)) {
	case IMEE_MAP_LOCAL:
		return imee_map_local(imee, gfn, gfn, IMEE_PERM_RWX);
	case IMEE_MAP_AGENT:
		return imee_map_local(imee, gfn, imee->agent_local_gfn,
				      IMEE_PERM_X);
	case IMEE_MAP_TARGET:
		return imee_map_target(imee, gfn, gla, false);
	case IMEE_MAP_WALK_COPY:
		if (imee->ncopies == IMEE_MAX_WALK_COPIES)
			return imee_stop(imee, IMEE_FAULT_NEEDS_A_BIT, 0, gpa,
					 gla);
		return imee_map_target(imee, gfn, gla, true);
	case IMEE_STOP_BLIND_SPOT:
		return imee_stop(imee, IMEE_FAULT_BLIND_SPOT, 0, gpa, gla);
	case IMEE_STOP_NEEDS_A_BIT:
		return imee_stop(imee, IMEE_FAULT_NEEDS_A_BIT, 0, gpa, gla);
	case IMEE_STOP_FORBIDDEN:
		return imee_stop(imee, IMEE_FAULT_FORBIDDEN, info, gpa, gla);
	case IMEE_STOP_NO_GPA:
	default:
		return imee_stop(imee, IMEE_FAULT_NO_GPA, 0, gpa, gla);
	}
}

int kvm_imee_exception(struct kvm_vcpu *vcpu, u32 vector, bool has_error,
		       u32 error_code, u64 cr2)
{
	struct imee *imee = imee_running(vcpu);
	u32 info = vector & 0xff;

	if (!imee)
		return -EPERM;
	imee->run_exceptions++;
	if (imee_trace)
		pr_info("exception %u error 0x%x cr2 0x%llx\n", vector, error_code, cr2);
	if (has_error)
		info |= IMEE_FAULT_INFO_HAS_ERROR | (error_code << 16);
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

/*
 * Under imee->mmu_lock: unmap what @kvm's VMM addresses [start, end) back.
 * Returns whether any memslot of @kvm intersects the range (then gen must
 * move, mapped or not: a page of it may be on its way in); *zapped: whether
 * an entry went (then the TLB must be flushed).
 */
static bool imee_zap_hva(struct imee *imee, struct kvm *kvm,
			 unsigned long start, unsigned long end, bool *zapped)
{
	struct kvm_memory_slot *slot;
	bool hit = false;
	int bkt, idx;

	idx = srcu_read_lock(&kvm->srcu);
	kvm_for_each_memslot(slot, bkt, kvm_memslots(kvm)) {
		unsigned long s = max(start, slot->userspace_addr);
		unsigned long e = min(end, slot->userspace_addr +
				      (slot->npages << PAGE_SHIFT));

		if (s >= e)
			continue;
		hit = true;
		*zapped |= imee_tdp_zap(&imee->tdp, hva_to_gfn_memslot(s, slot),
					hva_to_gfn_memslot(e + PAGE_SIZE - 1,
							   slot));
	}
	srcu_read_unlock(&kvm->srcu, idx);
	return hit;
}

/*
 * Security review: from the target's MMU notifier invalidate_range_start,
 * after KVM raised mmu_invalidate_in_progress for the range (under its
 * mmu_lock, released by now) and before the VMM's PTEs change and the
 * pages are freed.  Under imee->mmu_lock: gen++ (an in-flight
 * imee_map_target() of the range will not install), zap; then flush and
 * wait for the ImEE vCPU to leave guest mode before returning, i.e. before
 * the pages can go.  Races: imee_map_target() (gen, mmu_lock), retarget
 * (imee->target re-checked under mmu_lock).  Tests:
 * KernelImee.InvalidationsRacingPollModeNeverShowStaleBytes,
 * KernelImee.HostRemapsAndMemslotChangesAreFollowed.
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
		if (imee->target == kvm &&
		    imee_zap_hva(imee, kvm, start, end, &zapped)) {
			imee->gen++;
			imee->stats.invalidations++;
			if (zapped)
				imee->stats.tlb_flushes++;
		}
		spin_unlock(&imee->mmu_lock);
		if (zapped)
			imee_flush(imee);
	}
	rcu_read_unlock();
}

/*
 * Security review: (a) from kvm_invalidate_memslot(), the invalidation
 * phase of a memslot delete or move (slots_lock held): the slot's INVALID
 * copy is active and SRCU has been synchronized, so every
 * imee_map_target() that saw the old slot has finished (it holds the
 * target's srcu) and every later one retries; the old slot's pages are
 * still mapped by the VMM -- a munmap racing the rest of the change finds
 * nothing of ours left.  (b) From kvm_mmu_notifier_release() when the
 * VMM's mm exits, before exit_mmap() frees the pages; the notifier is
 * unhooked afterwards, hence target_gone: nothing is ever mapped again.
 * Both: gen++, zap, flush and wait, under imee->mmu_lock as above.  Tests:
 * KernelImee.InvalidationsRacingPollModeNeverShowStaleBytes (memslot delete
 * and move racing a poll-mode agent),
 * KernelImee.HostRemapsAndMemslotChangesAreFollowed,
 * KernelImee.VmmExitWhileMappingNeverMapsTheDyingPage,
 * KernelImee.TargetExitEndsTheSessionCleanly.
 */
void __kvm_imee_invalidate_gfn(struct kvm *kvm, u64 start, u64 end,
			       bool mm_gone)
{
	struct imee *imee;

	rcu_read_lock();
	list_for_each_entry_rcu(imee, &imee_list, node) {
		bool hit = false;

		if (READ_ONCE(imee->target) != kvm)
			continue;
		spin_lock(&imee->mmu_lock);
		if (imee->target == kvm) {
			imee_tdp_zap(&imee->tdp, start, end);
			if (mm_gone)
				WRITE_ONCE(imee->target_gone, true);
			imee_invalidated(imee);
			hit = true;
		}
		spin_unlock(&imee->mmu_lock);
		if (hit)
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
 * IMEE_ACTIVATE_READ_TARGET_CR3 only: the target vCPU's CR3 now.  While an
 * ImEE exists the patched vmx_vcpu_run() caches the guest's CR3 in
 * arch.cr3 at every VM exit, so it is current whenever the vCPU is outside
 * guest mode (unless its last exit predates every ImEE: then it is
 * reported STALE); a vCPU in guest mode is kicked out first (one VM exit of
 * the target, then it re-enters) and the value of that exit is used.
 * Without the flag nothing of this runs: the target is not disturbed.
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
	} else if (!(READ_ONCE(tv->arch.regs_avail) & BIT(VCPU_EXREG_CR3))) {
		stale = IMEE_PAGING_STALE;
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
			imee_stop(imee, IMEE_FAULT_EXIT, IMEE_EXIT_KVM |
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

/* Under imee->lock: add an activation's result to the counters. */
static void imee_count(struct imee *imee, const struct imee_activate *a)
{
	struct imee_stats *s = &imee->stats;
	int i;

	spin_lock(&imee->mmu_lock);
	s->activations++;
	s->exits += a->exits;
	s->exits_ept_violation += a->exits_ept_violation;
	s->exits_exception += a->exits_exception;
	s->exits_interrupt += a->exits_interrupt;
	s->exits_other += a->exits_other;
	for (i = 0; i < IMEE_EXIT_REASONS; i++)
		s->exit_reasons[i] += imee->run_exit_reasons[i];
	memset(imee->run_exit_reasons, 0, sizeof(imee->run_exit_reasons));
	if (a->status < ARRAY_SIZE(s->results))
		s->results[a->status]++;
	if (a->status == IMEE_RESULT_FAULT) {
		if (a->fault_kind < ARRAY_SIZE(s->faults))
			s->faults[a->fault_kind]++;
		if (a->fault_kind == IMEE_FAULT_EXCEPTION &&
		    IMEE_FAULT_INFO_VECTOR(a->fault_info) < ARRAY_SIZE(s->fault_vectors))
			s->fault_vectors[IMEE_FAULT_INFO_VECTOR(a->fault_info)]++;
	}
	spin_unlock(&imee->mmu_lock);
}

/*
 * After an activation, with the vCPU out of guest mode (vcpu->mutex held):
 * unmap and free its walk copies.  Returns how many no longer equal the
 * target's page (or may not: an invalidation ran since the copy).  Then
 * the walks that used them may have translated through entries the target
 * no longer has, and a read of such a page as data returned the copy's
 * bytes (A bits the walk set, say): user space re-reads the activation's
 * requests in software (kernel/API.md).
 */
static u32 imee_end_walk_copies(struct imee *imee)
{
	unsigned long gen;
	u32 i, changed = 0;

	if (!imee->ncopies)
		return 0;
	spin_lock(&imee->mmu_lock);
	gen = imee->gen;
	for (i = 0; i < imee->ncopies; i++)
		imee_tdp_zap(&imee->tdp, imee->copies[i].gfn,
			     imee->copies[i].gfn + 1);
	imee->stats.tlb_flushes++;
	spin_unlock(&imee->mmu_lock);
	imee_flush(imee);	/* before the next entry; the pages go now */

	for (i = 0; i < imee->ncopies; i++) {
		struct imee_walk_copy *c = &imee->copies[i];
		void *now = kmap_local_page(c->page);

		if (c->gen != gen || memcmp(page_address(c->copy), now, PAGE_SIZE))
			changed++;
		kunmap_local(now);
		put_page(c->page);
		__free_page(c->copy);
		atomic_long_dec(&imee_held_pages);
	}
	imee->ncopies = 0;
	return changed;
}

static long imee_activate(struct imee *imee, struct imee_activate __user *uarg)
{
	struct kvm_vcpu *vcpu = imee->vcpu;
	struct imee_activate arg;
	u64 exits, irqs, known;
	long r;

	if (copy_from_user(&arg, uarg, sizeof(arg)))
		return -EFAULT;
	if (arg.version != IMEE_VERSION)
		return -EPROTONOSUPPORT;
	if (arg.mode != IMEE_ACTIVATE_BATCH && arg.mode != IMEE_ACTIVATE_POLL)
		return -EINVAL;
	if (arg.flags & ~IMEE_ACTIVATE_VALID_FLAGS)
		return -EINVAL;
	if (memchr_inv(arg.reserved, 0, sizeof(arg.reserved)))
		return -EINVAL;
	/* the shell's pages are pinned through current->mm */
	if (imee->shell->mm != current->mm)
		return -EIO;
	arg = (struct imee_activate){ .version = arg.version, .mode = arg.mode,
				      .flags = arg.flags };

	if (mutex_lock_killable(&imee->lock))
		return -EINTR;
	if (READ_ONCE(imee->target_gone)) {
		arg.status = IMEE_RESULT_TARGET_GONE;
		goto done;
	}
	if (arg.flags & IMEE_ACTIVATE_READ_TARGET_CR3)
		imee_read_target(imee, &arg);

	r = mutex_lock_killable(&vcpu->mutex);
	if (r)
		goto unlock;
	if (!imee->exceptions_intercepted) {
		/* the patched vmx/svm_update_exception_bitmap() intercepts all */
		vcpu_load(vcpu);
		kvm_x86_call(update_exception_bitmap)(vcpu);
		vcpu_put(vcpu);
		imee->exceptions_intercepted = true;
	}
	memset(&imee->fault, 0, sizeof(imee->fault));
	imee->last_gfn = ~0ULL;
	imee->run_tdp_faults = 0;
	imee->run_exceptions = 0;
	/* poll mode has no end to check copies at: its walks stop instead */
	imee->walk_copies = imee->copies && arg.mode == IMEE_ACTIVATE_BATCH;
	WRITE_ONCE(imee->runner, current);
	exits = vcpu->stat.exits;
	irqs = vcpu->stat.irq_exits;
	vcpu->wants_to_run = true;	/* as KVM_RUN sets it */
	r = kvm_arch_vcpu_ioctl_run(vcpu);
	vcpu->wants_to_run = false;
	arg.exits = vcpu->stat.exits - exits;
	arg.exits_interrupt = vcpu->stat.irq_exits - irqs;
	arg.exits_ept_violation = imee->run_tdp_faults;
	arg.exits_exception = imee->run_exceptions;
	known = arg.exits_interrupt + arg.exits_ept_violation +
		arg.exits_exception;
	arg.exits_other = arg.exits > known ? arg.exits - known : 0;
	if (imee_trace)
		pr_info("activation: run %ld, exit reason %u, fault %u, %llu exits\n", r,
			vcpu->run->exit_reason, imee->fault.kind, arg.exits);
	WRITE_ONCE(imee->runner, NULL);
	arg.walk_copies = imee->ncopies;
	arg.walk_copies_changed = imee_end_walk_copies(imee);
	mutex_unlock(&vcpu->mutex);
	if (r < 0 && r != -EINTR && !imee->fault.kind) {
		imee_count(imee, &arg);	/* status NONE */
		goto unlock;
	}
	imee_report(imee, r, &arg);
done:
	imee_count(imee, &arg);
	r = copy_to_user(uarg, &arg, sizeof(arg)) ? -EFAULT : 0;
unlock:
	mutex_unlock(&imee->lock);
	return r;
}

static long imee_get_stats(struct imee *imee, struct imee_stats __user *uarg)
{
	struct imee_stats *s;
	long r;

	s = kmalloc(sizeof(*s), GFP_KERNEL);
	if (!s)
		return -ENOMEM;
	r = -EFAULT;
	if (copy_from_user(s, uarg, sizeof(*s)))
		goto out;
	r = -EPROTONOSUPPORT;
	if (s->version != IMEE_VERSION)
		goto out;
	r = -EINVAL;
	if (s->flags || memchr_inv(s->reserved, 0, sizeof(s->reserved)))
		goto out;
	spin_lock(&imee->mmu_lock);
	*s = imee->stats;
	s->pinned_pages = imee->pinned;
	s->ept_pages = imee->tdp.tables;
	spin_unlock(&imee->mmu_lock);
	s->version = IMEE_VERSION;
	r = copy_to_user(uarg, s, sizeof(*s)) ? -EFAULT : 0;
out:
	kfree(s);
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
	case IMEE_GET_STATS:
		return imee_get_stats(imee, (void __user *)arg);
	default:
		return -ENOTTY;
	}
}

static void imee_free(struct imee *imee)
{
	struct mm_struct *mm = imee->shell->mm;
	struct page *page;
	unsigned long gfn;

	imee_tdp_destroy(&imee->tdp);
	xa_for_each(&imee->pins, gfn, page) {
		unpin_user_page(page);
		atomic_long_dec(&imee_held_pages);
	}
	xa_destroy(&imee->pins);
	/* the shell holds mmgrab(); a dead mm's locked_vm does not matter */
	if (imee->pinned && mmget_not_zero(mm)) {
		account_locked_vm(mm, imee->pinned, false);
		mmput(mm);
	}
	if (imee->target)
		kvm_put_kvm(imee->target);
	kvm_put_kvm(imee->shell);
	kvfree(imee->copies);	/* empty: every activation ends its copies */
	kfree(imee);
	atomic_long_dec(&imee_objects);
}

/*
 * Take a published ImEE out of use, before imee_free().  Security review:
 * the vCPU could be in guest mode on our TDP right now if user space runs
 * the shell's vCPU itself (KVM_RUN on its fd; an activation holds the ImEE
 * file, so none runs).  Empty the TDP and make the vCPU reload its TDP
 * pointer -- KVM's, as closing is set -- before it enters again, while the
 * hooks still see the ImEE (no invalidation is missed until the vCPU is off
 * our tables); only then leave the list and, after RCU, free the tables.
 * imee_flush() waits until the vCPU is out of guest mode; LOAD_MMU_PGD is
 * requested before that kick, so the vCPU sees it before any later entry.
 * Tests: KernelImee.LaunchTeardownCyclesLeakNothing and
 * KernelImee.ToolKilledMidPollLeavesTheTargetUsable close ImEEs; no test
 * runs the shell's vCPU itself after close yet.
 */
static void imee_unpublish(struct imee *imee)
{
	spin_lock(&imee->mmu_lock);
	WRITE_ONCE(imee->closing, true);
	imee_tdp_zap(&imee->tdp, 0, IMEE_TDP_MAX_GFN + 1);
	imee_invalidated(imee);
	spin_unlock(&imee->mmu_lock);
	kvm_make_request(KVM_REQ_LOAD_MMU_PGD, imee->vcpu);
	imee_flush(imee);

	spin_lock(&imee_list_lock);
	list_del_rcu(&imee->node);
	atomic_dec(&kvm_imee_count);
	spin_unlock(&imee_list_lock);
	synchronize_rcu();	/* no hook sees the ImEE any more */
}

static int imee_release(struct inode *inode, struct file *filp)
{
	struct imee *imee = filp->private_data;

	imee_unpublish(imee);
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

/* The vendor part for the loaded kvm-intel or kvm-amd, or NULL. */
static const struct imee_vendor *imee_vendor(void)
{
	static const struct imee_vendor *const vendors[] = {
		&imee_vendor_intel, &imee_vendor_amd,
	};
	int i;

	if (!kvm_x86_ops.name)
		return NULL;
	for (i = 0; i < ARRAY_SIZE(vendors); i++)
		if (!strcmp(kvm_x86_ops.name, vendors[i]->kvm_name))
			return vendors[i];
	return NULL;
}

/* The vendor part, if this host can run ImEEs: KVM uses TDP and the CPU has what it needs. */
static const struct imee_vendor *imee_host_vendor(void)
{
	const struct imee_vendor *v = imee_vendor();

	return v && tdp_enabled && v->host_supported() ? v : NULL;
}

/* A reference on the live KVM VM behind @fd. */
static int imee_get_vm(int fd, struct kvm **out)
{
	struct fd f = fdget(fd);
	int r = 0;

	if (!fd_file(f))
		return -EBADF;
	/* Same test as SEV's intra-host migration: f_op is kvm_vm_fops. */
	if (!file_is_kvm(fd_file(f))) {
		r = -EBADF;
	} else if (READ_ONCE(((struct kvm *)fd_file(f)->private_data)->vm_dead)) {
		r = -EIO;
	} else {
		*out = fd_file(f)->private_data;
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
 * hides target memory (the shell's pages would win).  No guest_memfd
 * memslot in either VM (EOPNOTSUPP): private memory has no VMM mapping to
 * read and no MMU-notifier invalidation to follow.
 */
static int imee_check_layout(struct kvm *shell, struct kvm *target,
			     u64 agent_gfn, u64 agent_local_gfn)
{
	struct kvm_memory_slot *s, *t;
	int is, it, bs, bt, r = 0;

	is = srcu_read_lock(&shell->srcu);
	it = srcu_read_lock(&target->srcu);
	kvm_for_each_memslot(s, bs, kvm_memslots(shell))
		if (imee_slot_guest_memfd(s))
			r = -EOPNOTSUPP;
	kvm_for_each_memslot(t, bt, kvm_memslots(target))
		if (imee_slot_guest_memfd(t))
			r = -EOPNOTSUPP;
	if (r)
		goto unlock;
	if (!imee_user_slot(gfn_to_memslot(shell, agent_local_gfn)) ||
	    gfn_to_memslot(shell, agent_gfn))
		r = -EINVAL;
	kvm_for_each_memslot(s, bs, kvm_memslots(shell))
		kvm_for_each_memslot(t, bt, kvm_memslots(target))
			if (imee_user_slot(t) && imee_overlap(s, t))
				r = -EINVAL;
unlock:
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
static long imee_create(const struct imee_launch *arg, struct kvm *target,
			const struct imee_vendor *vendor)
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
	r = -EBUSY;	/* a vCPU that ran has KVM's TDP and state in use */
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
	__set_bit(vcpu->vcpu_idx, imee->vcpu_mask);
	mutex_init(&imee->lock);
	spin_lock_init(&imee->mmu_lock);
	xa_init(&imee->pins);
	imee->vendor = vendor;
	r = imee_tdp_init(&imee->tdp, vendor->format);
	if (!r && (vendor->features & IMEE_FEATURE_WALK_COPIES)) {
		imee->copies = kvcalloc(IMEE_MAX_WALK_COPIES,
					sizeof(*imee->copies),
					GFP_KERNEL_ACCOUNT);
		if (!imee->copies)
			r = -ENOMEM;
	}
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
		imee_unpublish(imee);
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
 * a new home): new target fields, an empty TDP, one TLB flush.  Nothing is
 * allocated or pinned again.
 */
static long imee_retarget(const struct imee_launch *arg, struct kvm *target)
{
	struct fd f = fdget(arg->imee_fd);
	struct imee *imee;
	struct kvm *old;
	int r;

	if (!fd_file(f))
		return -EBADF;
	r = -EBADF;
	if (fd_file(f)->f_op != &imee_fops)
		goto out;
	imee = fd_file(f)->private_data;
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
	/*
	 * Security review: imee->lock keeps activations out, so the vCPU is
	 * not in an activation; the flush (waiting for a vCPU that user space
	 * runs itself) happens before the lock is dropped, so no activation
	 * can run on the new target with the old target's translations in
	 * the TLB.  Lock: imee->mmu_lock orders the switch against the hooks
	 * (which re-check imee->target under it).  Tests:
	 * LiveKernel.RetargetMovesOneImeeBetweenTwoGuests,
	 * KernelImee.VmmExitWhileMappingNeverMapsTheDyingPage (retargets to a
	 * new VMM every round and checks its bytes).
	 */
	spin_lock(&imee->mmu_lock);
	old = imee->target;
	imee_set_target(imee, target, arg);
	imee_tdp_zap(&imee->tdp, 0, IMEE_TDP_MAX_GFN + 1);
	imee_invalidated(imee);
	spin_unlock(&imee->mmu_lock);
	imee_flush(imee);
	mutex_unlock(&imee->lock);
	kvm_put_kvm(old);
	r = 0;
out:
	fdput(f);
	return r;
}

static long imee_launch(struct imee_launch __user *uarg)
{
	const struct imee_vendor *vendor;
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
	    gpa_to_gfn(arg.agent_gpa) > IMEE_TDP_MAX_GFN ||
	    gpa_to_gfn(arg.agent_local_gpa) > IMEE_TDP_MAX_GFN ||
	    arg.agent_gpa == arg.agent_local_gpa)
		return -EINVAL;
	vendor = imee_host_vendor();
	if (!vendor)
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
	r = retarget ? imee_retarget(&arg, target) :
		       imee_create(&arg, target, vendor);
	if (r >= 0)
		return r;	/* the ImEE holds the target reference */
put_target:
	kvm_put_kvm(target);
	return r;
}

/* IMEE_QUERY: no version check, so that any caller can ask. */
static long imee_query(struct imee_query __user *uarg)
{
	const struct imee_vendor *vendor = imee_vendor();
	struct imee_query q;

	if (copy_from_user(&q, uarg, sizeof(q)))
		return -EFAULT;
	if (q.flags || q.pad || memchr_inv(q.reserved, 0, sizeof(q.reserved)))
		return -EINVAL;
	q = (struct imee_query){
		.version = IMEE_VERSION,
		.magic = IMEE_MAGIC,
		.features = IMEE_FEATURE_RETARGET |
			    IMEE_FEATURE_READ_TARGET_CR3 | IMEE_FEATURE_STATS |
			    IMEE_FEATURE_EXIT_COUNTS | IMEE_FEATURE_MEMLOCK |
			    IMEE_FEATURE_EXIT_REASONS,
		.max_gpa = (IMEE_TDP_MAX_GFN + 1) << PAGE_SHIFT,
	};
	if (vendor)
		q.features |= vendor->features;
	if (imee_host_vendor())
		q.features |= IMEE_FEATURE_HOST;
	return copy_to_user(uarg, &q, sizeof(q)) ? -EFAULT : 0;
}

long kvm_imee_dev_ioctl(struct file *filp, unsigned int ioctl,
			unsigned long arg)
{
	switch (ioctl) {
	case IMEE_LAUNCH:
		return imee_launch((void __user *)arg);
	case IMEE_QUERY:
		return imee_query((void __user *)arg);
	default:
		return -ENOTTY;
	}
}
