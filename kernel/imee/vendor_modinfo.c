// SPDX-License-Identifier: GPL-2.0
/*
 * ImEE: linked into kvm-intel.ko and kvm-amd.ko for their modinfo "version"
 * only (kvm.ko has the same from imee_main.c).  The stock KVM modules have
 * none, so `modinfo -F version kvm_intel` tells an ImEE build from the
 * distribution's, and DKMS installs ours beside the stock modules instead
 * of refusing them as the "same version" (kernel/README.md, DKMS).
 */
#include <linux/imee.h>
#include <linux/module.h>
#include <linux/stringify.h>

MODULE_VERSION("imee-" __stringify(IMEE_VERSION));
