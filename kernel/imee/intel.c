// SPDX-License-Identifier: GPL-2.0
/*
 * ImEE on Intel: VMX with EPT.  The ImEE's TDP is an EPT with execute-only
 * leaves (the agent's page) and A/D flags off; vmx.c's hooks
 * (kernel/patches/<x.y>/0003) hand EPT violations and exit reasons here.
 */

#include <linux/kvm_host.h>
#include <linux/kvm_imee.h>
#include <asm/msr.h>
#include <asm/vmx.h>

#include "core.h"

/* 4-level EPT with write-back paging structures and execute-only entries */
static bool imee_intel_supported(void)
{
	u64 cap;

	if (rdmsrl_safe(MSR_IA32_VMX_EPT_VPID_CAP, &cap))
		return false;
	return (cap & VMX_EPT_EXECUTE_ONLY_BIT) &&
	       (cap & VMX_EPT_PAGE_WALK_4_BIT) && (cap & VMX_EPTP_WB_BIT);
}

static u64 imee_intel_tdp_pointer(phys_addr_t root_pa)
{
	return imee_eptp(root_pa);
}

const struct imee_vendor imee_vendor_intel = {
	.kvm_name = "kvm_intel",
	.format = IMEE_TDP_EPT,
	.features = IMEE_FEATURE_VMX_EPT,
	.host_supported = imee_intel_supported,
	.tdp_pointer = imee_intel_tdp_pointer,
};

/* handle_ept_violation(), for the shell's vCPU */
int kvm_imee_ept_violation(struct kvm_vcpu *vcpu, u64 gpa, u64 qual, u64 gla)
{
	if (!(qual & IMEE_QUAL_GLA_VALID))
		gla = 0;
	return imee_tdp_fault(vcpu, gpa, gla, imee_ept_access(qual), (u32)qual,
			      EXIT_REASON_EPT_VIOLATION);
}
EXPORT_SYMBOL_GPL(kvm_imee_ept_violation);

/* vmx_vcpu_run(), after every VM exit while an ImEE exists */
void kvm_imee_vmx_exit(struct kvm_vcpu *vcpu, u32 basic_reason)
{
	imee_count_exit(vcpu, basic_reason);
}
EXPORT_SYMBOL_GPL(kvm_imee_vmx_exit);
