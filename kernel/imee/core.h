/* SPDX-License-Identifier: GPL-2.0 */
/*
 * ImEE: what the ImEE core (imee_main.c) and its vendor parts (intel.c:
 * VMX + EPT, amd.c: SVM + NPT) share.  As KVM's kvm_x86_ops, the core is
 * written once and asks the vendor for what differs: the TDP format, the
 * pointer a vCPU loads, host support; each vendor part decodes its own
 * exits (<linux/kvm_imee.h>) into the core's calls below.
 */
#ifndef IMEE_CORE_H
#define IMEE_CORE_H

#include <linux/kvm_host.h>
#include "tdp.h"

struct imee_vendor {
	const char *kvm_name;		/* kvm_x86_ops.name it runs under */
	enum imee_tdp_format format;
	/* IMEE_FEATURE_* bits this vendor's ImEE adds (imee_query) */
	u64 features;
	/* this CPU can run ImEEs (tdp_enabled and the format's needs) */
	bool (*host_supported)(void);
	/* what the vCPU loads for a root table at @root_pa: EPTP, nested CR3 */
	u64 (*tdp_pointer)(phys_addr_t root_pa);
};

extern const struct imee_vendor imee_vendor_intel;
extern const struct imee_vendor imee_vendor_amd;

/*
 * The ImEE vCPU's access at @gpa was refused by the TDP (@access:
 * IMEE_ACCESS_*, @gla its linear address or 0, @info the vendor's fault
 * information for IMEE_FAULT_FORBIDDEN).  Map or stop, as imee_classify()
 * says.  @exit_reason: the VMX basic exit reason reported if the same GFN
 * faults too often.  Returns as the exit handler must.
 */
int imee_tdp_fault(struct kvm_vcpu *vcpu, u64 gpa, u64 gla,
		   unsigned int access, u32 info, u32 exit_reason);

/* An exit of @vcpu, by VMX basic exit reason (AMD: its VMX counterpart). */
void imee_count_exit(struct kvm_vcpu *vcpu, u32 reason);

#endif /* IMEE_CORE_H */
