// SPDX-License-Identifier: GPL-2.0
/*
 * ImEE on AMD: SVM with nested paging (NPT).  The ImEE's TDP is an NPT
 * whose leaves are user pages (all NPT accesses are user accesses), target
 * memory read-only with NX, the agent's page readable and executable: NPT
 * has no execute-only leaf, so a read of agent_gpa returns the agent's
 * bytes instead of faulting (IMEE_FEATURE_AGENT_READABLE; libimee finds
 * such reads by the agent page's canary and a software walk, then moves
 * the agent).  svm.c's hooks (kernel/patches/<x.y>/0004) hand #NPF,
 * intercepted exceptions and exit codes here.  The TLB is flushed by ASID
 * (imee_flush() in imee_main.c).
 */

#include <linux/kvm_host.h>
#include <linux/kvm_imee.h>
#include <linux/mem_encrypt.h>
#include <asm/hypervisor.h>
#include <asm/svm.h>
#include <asm/vmx.h>

#include "core.h"

/*
 * NPT, and not nested under Hyper-V: there svm_flush_tlb_all() may flush
 * through the enlightened NPT TLB interface, which flushes KVM's roots of
 * the shell, not the ImEE's table.
 */
static bool imee_amd_supported(void)
{
	return boot_cpu_has(X86_FEATURE_NPT) &&
	       !hypervisor_is_type(X86_HYPER_MS_HYPERV);
}

/* the nested CR3 (VMCB control area), with the SME bit as KVM's own */
static u64 imee_amd_tdp_pointer(phys_addr_t root_pa)
{
	return __sme_set(root_pa);
}

const struct imee_vendor imee_vendor_amd = {
	.kvm_name = "kvm_amd",
	.format = IMEE_TDP_NPT,
	.features = IMEE_FEATURE_SVM_NPT | IMEE_FEATURE_AGENT_READABLE |
		    IMEE_FEATURE_WALK_COPIES,
	.host_supported = imee_amd_supported,
	.tdp_pointer = imee_amd_tdp_pointer,
};

/*
 * An SVM exit code as the VMX basic exit reason of the same event
 * (uapi imee.h, exit_reasons; the table is in kernel/API.md).
 */
static u32 imee_svm_exit_reason(u32 code)
{
	if (code <= SVM_EXIT_WRITE_CR8 || code == SVM_EXIT_CR0_SEL_WRITE ||
	    (code >= SVM_EXIT_CR0_WRITE_TRAP && code <= SVM_EXIT_CR15_WRITE_TRAP))
		return EXIT_REASON_CR_ACCESS;
	if (code >= SVM_EXIT_READ_DR0 && code <= SVM_EXIT_WRITE_DR7)
		return EXIT_REASON_DR_ACCESS;
	if (code >= SVM_EXIT_EXCP_BASE && code <= SVM_EXIT_LAST_EXCP)
		return EXIT_REASON_EXCEPTION_NMI;
	switch (code) {
	case SVM_EXIT_NMI:		return EXIT_REASON_EXCEPTION_NMI;
	case SVM_EXIT_INTR:		return EXIT_REASON_EXTERNAL_INTERRUPT;
	case SVM_EXIT_SHUTDOWN:		return EXIT_REASON_TRIPLE_FAULT;
	case SVM_EXIT_INIT:		return EXIT_REASON_INIT_SIGNAL;
	case SVM_EXIT_VINTR:		return EXIT_REASON_INTERRUPT_WINDOW;
	case SVM_EXIT_IRET:		return EXIT_REASON_NMI_WINDOW;
	case SVM_EXIT_TASK_SWITCH:	return EXIT_REASON_TASK_SWITCH;
	case SVM_EXIT_CPUID:		return EXIT_REASON_CPUID;
	case SVM_EXIT_HLT:		return EXIT_REASON_HLT;
	case SVM_EXIT_INVD:		return EXIT_REASON_INVD;
	case SVM_EXIT_INVLPG:		return EXIT_REASON_INVLPG;
	case SVM_EXIT_RDPMC:		return EXIT_REASON_RDPMC;
	case SVM_EXIT_RDTSC:		return EXIT_REASON_RDTSC;
	case SVM_EXIT_VMMCALL:		return EXIT_REASON_VMCALL;
	case SVM_EXIT_IOIO:		return EXIT_REASON_IO_INSTRUCTION;
	case SVM_EXIT_MSR:		return EXIT_REASON_MSR_READ; /* or write */
	case SVM_EXIT_ERR:		return EXIT_REASON_INVALID_STATE;
	case SVM_EXIT_MWAIT:		return EXIT_REASON_MWAIT_INSTRUCTION;
	case SVM_EXIT_MONITOR:		return EXIT_REASON_MONITOR_INSTRUCTION;
	case SVM_EXIT_PAUSE:		return EXIT_REASON_PAUSE_INSTRUCTION;
	case SVM_EXIT_IDTR_READ:
	case SVM_EXIT_GDTR_READ:
	case SVM_EXIT_IDTR_WRITE:
	case SVM_EXIT_GDTR_WRITE:	return EXIT_REASON_GDTR_IDTR;
	case SVM_EXIT_LDTR_READ:
	case SVM_EXIT_TR_READ:
	case SVM_EXIT_LDTR_WRITE:
	case SVM_EXIT_TR_WRITE:		return EXIT_REASON_LDTR_TR;
	case SVM_EXIT_NPF:		return EXIT_REASON_EPT_VIOLATION;
	case SVM_EXIT_RDTSCP:		return EXIT_REASON_RDTSCP;
	case SVM_EXIT_WBINVD:		return EXIT_REASON_WBINVD;
	case SVM_EXIT_XSETBV:		return EXIT_REASON_XSETBV;
	case SVM_EXIT_INVPCID:		return EXIT_REASON_INVPCID;
	default:			return IMEE_EXIT_REASON_SVM_OTHER;
	}
}

/* svm_vcpu_run(), after every #VMEXIT while an ImEE exists */
void kvm_imee_svm_exit(struct kvm_vcpu *vcpu, u32 exit_code)
{
	imee_count_exit(vcpu, imee_svm_exit_reason(exit_code));
}
EXPORT_SYMBOL_GPL(kvm_imee_svm_exit);

/* #NPF error code: a reserved bit set in an NPT entry (EPT misconfig's twin) */
#define IMEE_NPF_RSVD	BIT_ULL(3)

/*
 * npf_interception(), for the shell's vCPU: EXITINFO2 = GPA, EXITINFO1 =
 * error code.  Security review: the same path as an EPT violation on Intel
 * -- the vCPU's thread inside KVM_RUN, before KVM's own MMU sees the fault;
 * only imee_tdp_fault() installs entries, under the lock order, generation
 * and retry checks of imee_map_target() (imee_main.c), so the invalidations
 * that race it are the ones named there.  Tests: the KernelImee race tests,
 * in the AMD lab (tests/vtx-lab/README.md: not yet passing end to end).
 */
int kvm_imee_npf(struct kvm_vcpu *vcpu, u64 gpa, u64 error_code)
{
	if (error_code & IMEE_NPF_RSVD)
		return kvm_imee_unexpected_exit(vcpu, EXIT_REASON_EPT_MISCONFIG,
						gpa);
	/* no linear address: the #NPF does not report one */
	return imee_tdp_fault(vcpu, gpa, 0, imee_npf_access(error_code),
			      (u32)error_code, EXIT_REASON_EPT_VIOLATION);
}
EXPORT_SYMBOL_GPL(kvm_imee_npf);

/* the exceptions that push an error code (as KVM's x86_exception_has_error_code()) */
#define IMEE_ERROR_CODE_VECTORS						\
	(BIT(DF_VECTOR) | BIT(TS_VECTOR) | BIT(NP_VECTOR) | BIT(SS_VECTOR) | \
	 BIT(GP_VECTOR) | BIT(PF_VECTOR) | BIT(AC_VECTOR))

/*
 * svm_handle_exit(), for the shell's vCPU: an intercepted exception
 * (exit code SVM_EXIT_EXCP_BASE + @vector; #MC stays KVM's).  EXITINFO1
 * holds its error code, EXITINFO2 CR2 for #PF.
 */
int kvm_imee_svm_exception(struct kvm_vcpu *vcpu, u32 vector, u64 info1,
			   u64 info2)
{
	bool has_error = vector < 32 && (IMEE_ERROR_CODE_VECTORS & BIT(vector));

	return kvm_imee_exception(vcpu, vector, has_error,
				  has_error ? (u32)info1 : 0, info2);
}
EXPORT_SYMBOL_GPL(kvm_imee_svm_exception);
